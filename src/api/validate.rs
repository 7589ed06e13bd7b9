//! Request validation that reports every invalid field at once (HTTP 422).

use super::problem::{ApiError, FieldError};

#[derive(Default)]
pub struct Validator {
    errors: Vec<FieldError>,
}

impl Validator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, field: &str, code: &str, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.to_owned(),
            code: code.to_owned(),
            message: message.into(),
        });
    }

    /// Trims `value` and checks its length in characters; returns the trimmed text.
    pub fn text(&mut self, field: &str, value: &str, min: usize, max: usize) -> String {
        let trimmed = value.trim();
        let len = trimmed.chars().count();
        if len < min {
            if min == 1 {
                self.add(field, "required", "must not be empty");
            } else {
                self.add(
                    field,
                    "too_short",
                    format!("must be at least {min} characters"),
                );
            }
        } else if len > max {
            self.add(
                field,
                "too_long",
                format!("must be at most {max} characters"),
            );
        }
        if trimmed
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            self.add(
                field,
                "invalid_characters",
                "must not contain control characters",
            );
        }
        trimmed.to_owned()
    }

    /// Normalizes (trim, lowercase) and checks an email address.
    pub fn email(&mut self, field: &str, value: &str) -> String {
        let email = value.trim().to_lowercase();
        let valid = email.len() <= 254
            && email.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && local.len() <= 64
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains('@')
            })
            && !email.chars().any(|c| c.is_whitespace() || c.is_control());
        if !valid {
            self.add(
                field,
                "invalid_format",
                "must be an email address like name@example.com",
            );
        }
        email
    }

    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(self.errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_every_field_error() {
        let mut v = Validator::new();
        assert_eq!(v.email("email", "  Ada@Example.COM "), "ada@example.com");
        v.email("other", "not-an-email");
        v.text("name", "   ", 1, 100);
        v.text("bio", &"x".repeat(101), 1, 100);
        let err = v.finish().unwrap_err();
        let fields: Vec<_> = err
            .errors
            .iter()
            .map(|e| (e.field.as_str(), e.code.as_str()))
            .collect();
        assert_eq!(
            fields,
            [
                ("other", "invalid_format"),
                ("name", "required"),
                ("bio", "too_long")
            ]
        );
    }

    #[test]
    fn unicode_lengths_count_characters() {
        let mut v = Validator::new();
        assert_eq!(v.text("name", "ééé", 1, 3), "ééé");
        assert!(v.finish().is_ok());
    }
}
