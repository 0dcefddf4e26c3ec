//! The method registry: the one list of compression methods. Each line names a method folder;
//! the macro derives from it the recipe step type ([`Step`], the folder's `Spec` as written),
//! the resolved method ([`Method`], the folder's checked `Params`), the list of names recipes
//! accept, parsing by name, resolution and dispatch to the folder's [`Compressor`].
//!
//! Adding a method is adding its folder (with `NAME`, `Spec`, `Params`, `impl MethodSpec for
//! Spec` and `impl Compressor for Params`) and one line in the `registry!` call below.

use std::fmt;

use serde::de::{self, DeserializeOwned};
use serde::{Serialize, Serializer};

use crate::compress::spec::ResolveCtx;
use crate::compress::{Compressor, finequant, gptq, magnitude, rtn, sparsegpt, wanda};
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

macro_rules! registry {
    ($($variant:ident => $module:ident),* $(,)?) => {
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
            pub fn read<'de, A: de::MapAccess<'de>>(
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
                match self {
                    $(Step::$variant(s) => s.selection(),)*
                }
            }

            /// Resolves the step into a checked [`Method`].
            pub fn resolve(&self, ctx: &ResolveCtx<'_>) -> Result<Method> {
                match self {
                    $(Step::$variant(s) => Ok(Method::$variant(s.resolve(ctx)?)),)*
                }
            }
        }

        impl Serialize for Step {
            /// As written: `{name: spec}`.
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
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
            pub fn compressor(&self) -> &dyn Compressor {
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

        impl Serialize for Method {
            /// `{"method": name, ...params}`.
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                let params = match self {
                    $(Method::$variant(p) => serde_json::to_value(p),)*
                }
                .map_err(serde::ser::Error::custom)?;
                let mut out = serde_json::Map::new();
                out.insert("method".into(), self.name().into());
                if let serde_json::Value::Object(fields) = params {
                    out.extend(fields);
                }
                out.serialize(s)
            }
        }
    };
}

registry! {
    Magnitude => magnitude,
    Wanda => wanda,
    SparseGpt => sparsegpt,
    Rtn => rtn,
    Gptq => gptq,
    FineQuant => finequant,
}
