//! The method registry macro. Its one invocation, in `compress/mod.rs`, is the one list of
//! compression methods: each line names a method folder, and the macro derives from it the
//! folder's module, the recipe step type (`Step`, the folder's `Spec` as written), the resolved
//! method (`Method`, the folder's checked `Params`), the list of names recipes accept, parsing
//! by name, resolution and dispatch to the folder's [`Compressor`].
//!
//! Adding a method is adding its folder (with `NAME`, `Spec`, `Params`, `impl MethodSpec for
//! Spec` and `impl Compressor for Params`) and one line in that list.
//!
//! Why a macro rather than the three hand-written registries DESIGN-NEXT.md proposed (`Step`,
//! `Method`, `compressor()`): the enums and their `match`es stay exhaustive and unboxed as
//! proposed, but they are generated from one list, so a method cannot be registered in one
//! place and forgotten in another, and no name can fall through to another method.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::compress::Compressor;
use crate::compress::spec::ResolveCtx;
use crate::error::Result;

/// What a method folder's recipe spec provides.
pub trait MethodSpec:
    DeserializeOwned + Serialize + Default + Clone + fmt::Debug + PartialEq
{
    /// The method's resolved parameters, which also compress.
    type Params: Compressor + Serialize + Clone + fmt::Debug + PartialEq;
    /// The step's `targets:` and `ignore:` globs as written.
    fn selection(&self) -> (Option<&[String]>, Option<&[String]>);
    /// Checks every parameter against the targeted linears and fills the defaults.
    fn resolve(&self, ctx: &ResolveCtx<'_>) -> Result<Self::Params>;
}

#[macro_export]
#[doc(hidden)]
macro_rules! registry {
    ($($variant:ident => $module:ident),* $(,)?) => {
        $(pub mod $module;)*

        /// Method names accepted under `steps`, in documentation order.
        pub const METHOD_NAMES: &[&str] = &[$($module::NAME),*];

        /// One recipe step as written: a method name and its parameters.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Step {
            $($variant($module::Spec),)*
        }

        /// One resolved compression method with all its parameters checked.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Method {
            $($variant($module::Params),)*
        }

        impl Step {
            /// The method name as written in recipes (`"wanda"`).
            pub fn name(&self) -> &'static str {
                match self {
                    $(Step::$variant(_) => $module::NAME,)*
                }
            }

            /// Reads the parameters of the method called `name` (`None` for an unknown name);
            /// a missing or `null` value means all defaults.
            pub fn read<'de, A: serde::de::MapAccess<'de>>(
                name: &str,
                map: &mut A,
            ) -> std::result::Result<Option<Step>, A::Error> {
                Ok(match name {
                    $($module::NAME => Some(Step::$variant(
                        map.next_value::<Option<$module::Spec>>()?.unwrap_or_default(),
                    )),)*
                    _ => None,
                })
            }

            /// `targets:` and `ignore:` as written.
            pub fn selection(&self) -> (Option<&[String]>, Option<&[String]>) {
                use $crate::compress::MethodSpec as _;
                match self {
                    $(Step::$variant(s) => s.selection(),)*
                }
            }

            /// Resolves the step into a checked [`Method`].
            pub fn resolve(
                &self,
                ctx: &$crate::compress::spec::ResolveCtx<'_>,
            ) -> $crate::error::Result<Method> {
                use $crate::compress::MethodSpec as _;
                match self {
                    $(Step::$variant(s) => Ok(Method::$variant(s.resolve(ctx)?)),)*
                }
            }
        }

        impl serde::Serialize for Step {
            /// As written: `{name: spec}`.
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(1))?;
                match self {
                    $(Step::$variant(spec) => m.serialize_entry($module::NAME, spec)?,)*
                }
                m.end()
            }
        }

        impl Method {
            /// The method's compressor.
            pub fn compressor(&self) -> &dyn $crate::compress::Compressor {
                match self {
                    $(Method::$variant(p) => p,)*
                }
            }

            /// The method name (`"wanda"`).
            pub fn name(&self) -> &'static str {
                match self {
                    $(Method::$variant(_) => $module::NAME,)*
                }
            }
        }

        impl serde::Serialize for Method {
            /// `{"method": name, ...params}`.
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                let params = match self {
                    $(Method::$variant(p) => serde_json::to_value(p),)*
                }
                .map_err(serde::ser::Error::custom)?;
                let mut out = serde_json::Map::new();
                out.insert("method".into(), self.name().into());
                if let serde_json::Value::Object(fields) = params {
                    out.extend(fields);
                }
                serde::Serialize::serialize(&out, s)
            }
        }
    };
}
