//! `--option MODULE:PARAM=VALUE`: the parameter must exist in the module
//! and the value must parse as its type, as the kernel's parameter
//! setters would parse it (kernel/params.c: `param_set_int` and friends
//! use kstrto* with base 0, `param_set_hexint` base 16, `param_set_bool`
//! kstrtobool; arrays are comma-separated elements, `param_array_set`).
//! The type is the module's own `parmtype=NAME:TYPE` (moduleparam.h
//! `__MODULE_PARM_TYPE`, "array of TYPE" for arrays).

use std::path::Path;
use std::str::FromStr;

use serde::Serialize;

use crate::InjectError;

/// `--option MOD:PARAM=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModuleOption {
    pub module: String,
    pub param: String,
    pub value: String,
}

impl FromStr for ModuleOption {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let err =
            || format!("'{s}': expected MODULE:PARAM=VALUE, e.g. ib_ipoib:send_queue_size=256");
        let (module, rest) = s.split_once(':').ok_or_else(err)?;
        let (param, value) = rest.split_once('=').ok_or_else(err)?;
        if module.is_empty()
            || param.is_empty()
            || value.contains(char::is_whitespace) && !value.starts_with('"')
        {
            return Err(err());
        }
        Ok(ModuleOption {
            module: module.replace('-', "_"),
            param: param.to_string(),
            value: value.to_string(),
        })
    }
}

impl std::fmt::Display for ModuleOption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}={}", self.module, self.param, self.value)
    }
}

/// kstrtoull/kstrtoll with base 0 (`0x` hex, leading `0` octal) or a
/// fixed base; a trailing newline is allowed, as in the kernel.
fn parse_integer(v: &str, base: u32) -> Option<(bool, u128)> {
    let v = v.strip_suffix('\n').unwrap_or(v);
    let (negative, v) = match v.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, v.strip_prefix('+').unwrap_or(v)),
    };
    let (radix, digits) = match base {
        0 if v.len() > 1 && (v.starts_with("0x") || v.starts_with("0X")) => (16, &v[2..]),
        0 if v.len() > 1 && v.starts_with('0') => (8, &v[1..]),
        0 => (10, v),
        16 => (
            16,
            v.strip_prefix("0x")
                .or_else(|| v.strip_prefix("0X"))
                .unwrap_or(v),
        ),
        b => (b, v),
    };
    if digits.is_empty() {
        return None;
    }
    u128::from_str_radix(digits, radix)
        .ok()
        .map(|n| (negative, n))
}

/// Whether `v` is a valid value of the kernel parameter type `ty`, or why
/// not.
fn check_scalar(ty: &str, v: &str) -> Result<(), String> {
    let int = |base: u32, min: i128, max: i128| {
        let (neg, n) = parse_integer(v, base).ok_or_else(|| format!("'{v}' is not an integer"))?;
        let n = i128::try_from(n).map_err(|_| format!("{v} is out of range"))?;
        let n = if neg { -n } else { n };
        if n < min || n > max {
            return Err(format!("{v} is out of range for {ty} ({min} to {max})"));
        }
        Ok(())
    };
    match ty {
        "byte" => int(0, 0, u8::MAX.into()),
        "short" => int(0, i16::MIN.into(), i16::MAX.into()),
        "ushort" => int(0, 0, u16::MAX.into()),
        "int" => int(0, i32::MIN.into(), i32::MAX.into()),
        "uint" => int(0, 0, u32::MAX.into()),
        "hexint" => int(16, 0, u32::MAX.into()),
        "long" => int(0, i64::MIN.into(), i64::MAX.into()),
        "ulong" | "ullong" => int(0, 0, u64::MAX.into()),
        // kstrtobool: the first character decides; "on"/"off" too.
        "bool" | "invbool" | "bint" => {
            let ok = matches!(
                v.as_bytes().first(),
                Some(b'y' | b'Y' | b't' | b'T' | b'1' | b'n' | b'N' | b'f' | b'F' | b'0')
            ) || matches!(v.to_ascii_lowercase().as_str(), "on" | "off" | "of");
            if ok {
                Ok(())
            } else {
                Err(format!("'{v}' is not a boolean (y, n, 1, 0, on, off)"))
            }
        }
        // charp, string and types kmodkit does not know take any text.
        _ => Ok(()),
    }
}

/// The parameters of a module: (name, type) from `parmtype`, and names
/// only from `parm` (descriptions of parameters without a type entry).
fn parameters(module: &kmodkit_module::Module) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for v in module.modinfo_values("parmtype") {
        let v = String::from_utf8_lossy(v);
        if let Some((n, t)) = v.split_once(':') {
            if !out.iter().any(|(m, _)| m == n) {
                out.push((n.to_string(), Some(t.to_string())));
            }
        }
    }
    for v in module.modinfo_values("parm") {
        let v = String::from_utf8_lossy(v);
        if let Some((n, _)) = v.split_once(':') {
            if !out.iter().any(|(m, _)| m == n) {
                out.push((n.to_string(), None));
            }
        }
    }
    out
}

/// Checks `option` against the module at `path`.
pub(crate) fn check(option: &ModuleOption, path: &Path) -> Result<(), InjectError> {
    let module =
        kmodkit_module::read_module_mapped(path, kmodkit_module::compression::DEFAULT_LIMIT)
            .map_err(|source| InjectError::Module {
                name: option.module.clone(),
                source,
            })?;
    let params = parameters(&module);
    let Some((_, ty)) = params.iter().find(|(n, _)| *n == option.param) else {
        let names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
        return Err(InjectError::Invalid(if names.is_empty() {
            format!(
                "--option {option}: {} ({}) has no parameters",
                option.module,
                path.display()
            )
        } else {
            format!(
                "--option {option}: {} ({}) has no parameter {}; its parameters are: {}",
                option.module,
                path.display(),
                option.param,
                names.join(", ")
            )
        }));
    };
    let Some(ty) = ty else { return Ok(()) };
    let value = option.value.trim_matches('"');
    let result = match ty.strip_prefix("array of ") {
        Some(elem) => value.split(',').try_for_each(|v| check_scalar(elem, v)),
        None => check_scalar(ty, value),
    };
    result.map_err(|why| {
        InjectError::Invalid(format!(
            "--option {option}: {} is of type {ty} ({}): {why}",
            option.param,
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_as_the_kernel_parses_them() {
        assert!(check_scalar("int", "-1").is_ok());
        assert!(check_scalar("int", "0x7fffffff").is_ok());
        assert!(check_scalar("int", "2147483648").is_err());
        assert!(check_scalar("uint", "-1").is_err());
        assert!(check_scalar("uint", "010").is_ok());
        assert!(check_scalar("uint", "09").is_err(), "octal");
        assert!(check_scalar("byte", "256").is_err());
        assert!(check_scalar("hexint", "ff").is_ok());
        assert!(check_scalar("bool", "Y").is_ok());
        assert!(check_scalar("bool", "on").is_ok());
        assert!(check_scalar("bool", "maybe").is_err());
        assert!(check_scalar("charp", "anything").is_ok());
        assert!(check_scalar("int", "12abc").is_err());
    }
}
