//! The JSON Schema shipped for editors (`config/willwatch.schema.json`,
//! printed by `willwatch check --json-schema`). It must accept every
//! config willwatch accepts, so every config a test means to be valid
//! goes through `assert_valid`.

use std::sync::OnceLock;

/// The schema's file, as shipped.
pub const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/willwatch.schema.json");

pub fn schema() -> &'static serde_json::Value {
    static SCHEMA: OnceLock<serde_json::Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let text = std::fs::read_to_string(PATH).expect("the JSON schema is readable");
        serde_json::from_str(&text).expect("the schema is JSON")
    })
}

pub fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| jsonschema::validator_for(schema()).expect("a valid JSON Schema"))
}

/// A TOML config as the JSON document the schema describes.
pub fn as_json(toml_text: &str) -> serde_json::Value {
    let value: toml::Value = toml::from_str(toml_text).expect("the config is TOML");
    serde_json::to_value(value).expect("TOML values are JSON values")
}

/// What the schema finds wrong with `toml_text`, each with where it is.
pub fn errors(toml_text: &str) -> Vec<String> {
    validator().iter_errors(&as_json(toml_text)).map(|e| format!("at `{}`: {e}", e.instance_path)).collect()
}

/// Fails, saying what the schema refuses, unless it accepts `toml_text`:
/// a config the test means to be valid.
pub fn assert_valid(toml_text: &str) {
    let errors = errors(toml_text);
    assert!(errors.is_empty(), "the JSON schema ({PATH}) refuses a valid config: {errors:#?}\n{toml_text}");
}
