//! `${NAME}` references to environment variables in configuration values
//! (secrets stay out of job files).

use thiserror::Error;

/// A configuration value names an environment variable that is not set.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("environment variable {0} is not set (referenced as ${{{0}}} in the job)")]
pub struct MissingEnv(pub String);

/// Replaces every `${NAME}` in `value` with the environment variable `NAME`.
///
/// # Errors
/// [`MissingEnv`] when a named variable is not set.
///
/// # Examples
/// ```
/// use streamforge_dataflow::env::expand_env;
/// std::env::set_var("SF_DOC_USER", "alice");
/// assert_eq!(expand_env("user=${SF_DOC_USER};").unwrap(), "user=alice;");
/// assert!(expand_env("${SF_DOC_UNSET_VARIABLE}").is_err());
/// ```
pub fn expand_env(value: &str) -> Result<String, MissingEnv> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start + 2..].find('}') else {
            break;
        };
        let name = &rest[start + 2..start + 2 + len];
        out.push_str(&rest[..start]);
        out.push_str(&std::env::var(name).map_err(|_| MissingEnv(name.to_string()))?);
        rest = &rest[start + 3 + len..];
    }
    out.push_str(rest);
    Ok(out)
}
