//! Placeholders in action settings: `{id}`, `{event}`, `{topic}`,
//! `{payload}`, substituted from an event into topics, payloads, command
//! arguments and header values.
//!
//! Parsed once when the config is loaded, so an unknown placeholder is a
//! config error, and rendering is a plain walk over the parts. `{{` and `}}`
//! stand for literal braces.

use crate::event::Event;

/// The placeholders a template may use.
pub const PLACEHOLDERS: [&str; 4] = ["id", "event", "topic", "payload"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Id,
    Event,
    Topic,
    Payload,
}

/// Why a template is wrong, with the byte offset in the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub offset: usize,
    pub message: String,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(i) = rest.find(['{', '}']) {
            literal.push_str(&rest[..i]);
            let offset = text.len() - rest.len() + i;
            let tail = &rest[i..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                literal.push_str(&tail[..1]);
                rest = &tail[2..];
                continue;
            }
            if tail.starts_with('}') {
                return Err(TemplateError { offset, message: "a lone `}` (write `}}` for a literal brace)".into() });
            }
            let Some(end) = tail.find('}') else {
                return Err(TemplateError {
                    offset,
                    message: "`{` is never closed (write `{{` for a literal brace)".into(),
                });
            };
            let name = &tail[1..end];
            let part = match name {
                "id" => Part::Id,
                "event" => Part::Event,
                "topic" => Part::Topic,
                "payload" => Part::Payload,
                other => {
                    return Err(TemplateError {
                        offset,
                        message: format!("unknown placeholder `{{{other}}}`; known: {{{}}}", PLACEHOLDERS.join("}, {")),
                    });
                }
            };
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(part);
            rest = &tail[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    pub fn render(&self, event: &Event) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Id => out.push_str(&event.device),
                Part::Event => out.push_str(event.kind.as_str()),
                Part::Topic => out.push_str(&event.topic),
                Part::Payload => out.push_str(&event.payload),
            }
        }
        out
    }
}

impl std::fmt::Display for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for part in &self.parts {
            match part {
                Part::Text(t) => f.write_str(&t.replace('{', "{{").replace('}', "}}"))?,
                Part::Id => f.write_str("{id}")?,
                Part::Event => f.write_str("{event}")?,
                Part::Topic => f.write_str("{topic}")?,
                Part::Payload => f.write_str("{payload}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;
    use crate::event::test_event;

    #[test]
    fn placeholders_are_substituted() {
        let t = Template::parse("plant/{id}/cmd ({event} on {topic}: {payload})").unwrap();
        let e = test_event(EventKind::Offline, "pump-7");
        assert_eq!(t.render(&e), "plant/pump-7/cmd (offline on plant/pump-7/status: offline)");
    }

    #[test]
    fn doubled_braces_are_literal() {
        let t = Template::parse("{{\"device\": \"{id}\"}}").unwrap();
        assert_eq!(t.render(&test_event(EventKind::Online, "a")), "{\"device\": \"a\"}");
        assert_eq!(t.to_string(), "{{\"device\": \"{id}\"}}");
    }

    #[test]
    fn hostile_values_stay_text() {
        let t = Template::parse("{id}").unwrap();
        assert_eq!(t.render(&test_event(EventKind::Online, "$(reboot);rm -rf ~")), "$(reboot);rm -rf ~");
    }

    #[test]
    fn unknown_and_unclosed_placeholders_are_errors_with_offsets() {
        let e = Template::parse("a/{device}/b").unwrap_err();
        assert_eq!(e.offset, 2);
        assert!(e.message.starts_with("unknown placeholder `{device}`"), "{}", e.message);
        assert_eq!(Template::parse("a{id").unwrap_err().offset, 1);
        assert_eq!(Template::parse("a}b").unwrap_err().offset, 1);
    }
}
