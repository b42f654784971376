//! The TOML config model: load, env overrides, validation with file:line errors.
//! Owns nothing at run time; must not read the network.
