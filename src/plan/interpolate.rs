//! `{{ expr }}` in plan strings: finding the expressions, naming what they
//! reference, and rendering them at run time.
//!
//! Only `{{ … }}` is special in a plan string: shell text such as `${HOME}` or
//! `${#list[@]}` passes through untouched. Each expression is compiled by the same
//! minijinja environment that renders template files, so filters and syntax are
//! the same in both places.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use minijinja::{Environment, UndefinedBehavior, Value};

/// One `{{ … }}` in a string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expression {
    /// The expression between the braces, trimmed.
    pub source: String,
    /// Byte offset of the opening `{{` in the string.
    pub offset: usize,
}

/// A syntax problem in a string, at a byte offset into it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub offset: usize,
    pub message: String,
}

/// The shared expression engine: strict about undefined names, bounded in work.
pub fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // A runaway expression (a huge `range`) stops instead of hanging a run.
        env.set_fuel(Some(1_000_000));
        env.add_filter("quote", quote);
        env
    })
}

/// The `quote` filter: a value as one word for `/bin/sh` (`shell = "…"`, a
/// rendered script), whatever it holds: spaces, quotes, `$`, `;`. As
/// Ansible's filter of that name: in single quotes, each `'` written `'"'"'`.
fn quote(value: Value) -> String {
    let text = value.to_string();
    format!("'{}'", text.replace('\'', "'\"'\"'"))
}

/// Whether a string holds any `{{`; most do not, and skip all the work below.
pub fn has_expressions(text: &str) -> bool {
    text.contains("{{")
}

/// The expressions in a string, each compiled once to check its syntax.
pub fn expressions(text: &str) -> Result<Vec<Expression>, SyntaxError> {
    let mut found = Vec::new();
    let mut rest = 0;
    while let Some(open) = text[rest..].find("{{").map(|i| i + rest) {
        let inner_start = open + 2;
        let Some(close) = text[inner_start..].find("}}").map(|i| i + inner_start) else {
            return Err(SyntaxError {
                offset: open,
                message: "`{{` is never closed with `}}`".into(),
            });
        };
        let source = text[inner_start..close].trim();
        if source.is_empty() {
            return Err(SyntaxError {
                offset: open,
                message: "empty `{{ }}`".into(),
            });
        }
        if let Err(err) = environment().compile_expression(source) {
            return Err(SyntaxError {
                offset: open,
                message: format!(
                    "invalid expression `{source}`: {}",
                    err.detail().unwrap_or("syntax error")
                ),
            });
        }
        found.push(Expression {
            source: source.to_string(),
            offset: open,
        });
        rest = close + 2;
    }
    Ok(found)
}

/// Whether a plan string names `{{ run.dir }}` (the run's local directory).
pub fn reads_run_dir(text: &str) -> bool {
    has_expressions(text)
        && expressions(text).unwrap_or_default().iter().any(|e| {
            references(e)
                .iter()
                .any(|name| name == "run.dir" || name == "run")
        })
}

/// The steps whose outputs a plan string reads (`{{ steps.db.outputs.host }}`).
pub fn outputs_read(text: &str) -> BTreeSet<String> {
    output_keys_read(text)
        .into_iter()
        .map(|(step, _)| step)
        .collect()
}

/// The outputs a plan string reads, by step: `(db, Some(host))` for
/// `{{ steps.db.outputs.host }}`, `(db, None)` where it reads the step's
/// outputs as a whole (or the step itself).
pub fn output_keys_read(text: &str) -> BTreeSet<(String, Option<String>)> {
    if !has_expressions(text) {
        return BTreeSet::new();
    }
    expressions(text)
        .unwrap_or_default()
        .iter()
        .flat_map(references)
        .filter_map(|name| {
            let mut parts = name.split('.');
            if parts.next() != Some("steps") {
                return None;
            }
            let step = parts.next()?.to_string();
            let key = match parts.next() {
                Some("outputs") => parts.next().map(str::to_string),
                _ => None,
            };
            Some((step, key))
        })
        .collect()
}

/// The dotted names an expression reads: `vars.region`, `steps.db.outputs.host`.
pub fn references(expression: &Expression) -> BTreeSet<String> {
    match environment().compile_expression(&expression.source) {
        Ok(compiled) => compiled.undeclared_variables(true).into_iter().collect(),
        Err(_) => BTreeSet::new(),
    }
}

/// Renders every `{{ }}` in `text` against `context`.
pub fn render(text: &str, context: &Value) -> Result<String, RenderError> {
    if !has_expressions(text) {
        return Ok(text.to_string());
    }
    let exprs = expressions(text).map_err(|e| RenderError {
        expression: text.to_string(),
        message: e.message,
    })?;
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for expr in exprs {
        out.push_str(&text[last..expr.offset]);
        let compiled = environment()
            .compile_expression(&expr.source)
            .map_err(|e| RenderError::new(&expr, e))?;
        let value = compiled
            .eval(context.clone())
            .map_err(|e| RenderError::new(&expr, e))?;
        if value.is_undefined() {
            return Err(RenderError {
                expression: expr.source.clone(),
                message: "is undefined".into(),
            });
        }
        out.push_str(&display(&value));
        let close = text[expr.offset..]
            .find("}}")
            .map(|i| i + expr.offset + 2)
            .unwrap_or(text.len());
        last = close;
    }
    out.push_str(&text[last..]);
    Ok(out)
}

/// How a value reads in plan strings and rendered files: booleans as `true` and
/// `false` (shell and config files expect them lowercase), the rest as minijinja
/// prints them.
pub fn display(value: &Value) -> String {
    match value.kind() {
        minijinja::value::ValueKind::Bool => value.is_true().to_string(),
        _ => value.to_string(),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot render `{{{{ {expression} }}}}`: {message}")]
pub struct RenderError {
    pub expression: String,
    pub message: String,
}

impl RenderError {
    fn new(expr: &Expression, err: minijinja::Error) -> Self {
        RenderError {
            expression: expr.source.clone(),
            message: err
                .detail()
                .map(str::to_string)
                .unwrap_or_else(|| err.kind().to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_keys_read_name_the_step_and_the_key() {
        let keys = output_keys_read(
            "{{ steps.net.outputs.vpc }} {{ steps.db.outputs['host'] }} {{ steps.all.outputs | tojson }} {{ vars.x }}",
        );
        let keys: Vec<(&str, Option<&str>)> = keys
            .iter()
            .map(|(step, key)| (step.as_str(), key.as_deref()))
            .collect();
        assert_eq!(
            keys,
            [("all", None), ("db", None), ("net", Some("vpc"))],
            "a key in brackets counts as the outputs as a whole"
        );
    }

    #[test]
    fn finds_expressions_and_leaves_shell_alone() {
        let exprs = expressions("echo ${HOME} ${#a[@]} {{ vars.region }}-{{run.id}}").unwrap();
        assert_eq!(exprs.len(), 2);
        assert_eq!(exprs[0].source, "vars.region");
        assert_eq!(
            exprs[1].offset,
            "echo ${HOME} ${#a[@]} {{ vars.region }}-".len()
        );
    }

    #[test]
    fn quote_makes_one_shell_word_of_anything() {
        let context = Value::from(minijinja::value::Serde(serde_json::json!({
            "vars": {"name": "it's $HOME; rm -rf /", "n": 7}
        })));
        let quoted = render("{{ vars.name | quote }}", &context).unwrap();
        assert_eq!(quoted, r#"'it'"'"'s $HOME; rm -rf /'"#);
        // What the shell makes of it is the value, as one word.
        let echoed = std::process::Command::new("/bin/sh")
            .args(["-c", &format!("printf %s {quoted}")])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(echoed.stdout).unwrap(),
            "it's $HOME; rm -rf /"
        );
        assert_eq!(render("{{ vars.n | quote }}", &context).unwrap(), "'7'");
    }

    #[test]
    fn reports_unclosed_and_invalid() {
        assert_eq!(expressions("a {{ vars.x").unwrap_err().offset, 2);
        assert!(expressions("{{ vars. }}")
            .unwrap_err()
            .message
            .contains("invalid expression"));
    }

    #[test]
    fn names_nested_references() {
        let expr = &expressions("{{ steps.db.outputs.host | upper }}").unwrap()[0];
        assert_eq!(
            references(expr).into_iter().collect::<Vec<_>>(),
            ["steps.db.outputs.host"]
        );
    }

    #[test]
    fn renders_against_a_context() {
        let ctx = Value::from(minijinja::value::Serde(
            serde_json::json!({"vars": {"n": 3, "r": "eu"}, "run": {"drill": true}}),
        ));
        assert_eq!(
            render("${X}/{{ vars.r }}/{{ vars.n + 1 }}/{{ run.drill }}", &ctx).unwrap(),
            "${X}/eu/4/true"
        );
        assert!(render("{{ vars.missing }}", &ctx).is_err());
    }
}
