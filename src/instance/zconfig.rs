//! A reader for the ZConfig file format, as ZConfig 4's `cfgparser` reads it.
//!
//! Format (supervisor.md §3.1):
//! - Line oriented. Blank lines and lines whose first non-blank character is `#` are ignored;
//!   there are no trailing comments (`key 5 # c` has the value `5 # c`).
//! - `key value`: the key is the first word (no white space or parentheses), the value the
//!   rest of the line, stripped. Keys keep their case here; schemas compare them
//!   case-insensitively, except in `<environment>`.
//! - `<type [name]>` … `</type>` open and close a section, `<type [name]/>` is an empty one.
//!   Type and name are lower-cased; section headers are not substituted.
//! - `%define NAME [value]` (names case-insensitive; redefining with a different value is an
//!   error), `%include PATH` (relative to the including file; its content goes into the
//!   current section and shares the defines), `%import PACKAGE` (a Python schema extension:
//!   recorded so the caller can report it).
//! - Values (and directive arguments) are substituted: `$name`/`${name}` → a define,
//!   `$(NAME)` → an environment variable, `$$` → `$`. Undefined names are errors.
//!
//! This module knows no schema: it yields a tree of sections; `zeoconf` gives it meaning.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::error::ConfigError;

/// A `key value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// As written (case preserved).
    pub key: String,
    /// After substitution.
    pub value: String,
    pub file: PathBuf,
    pub line: usize,
}

/// A section (the file itself is the root section, with an empty type).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section {
    /// Lower-cased type (`filestorage`); empty for the root.
    pub kind: String,
    /// Lower-cased name, if any (`<filestorage 1>` → `1`).
    pub name: Option<String>,
    pub file: PathBuf,
    pub line: usize,
    pub keys: Vec<KeyValue>,
    pub sections: Vec<Section>,
}

/// A `%import` seen while reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    pub package: String,
    pub file: PathBuf,
    pub line: usize,
}

/// A parsed file: the root section, the `%import`s, and the final defines.
#[derive(Debug, Clone, Default)]
pub struct Document {
    pub root: Section,
    pub imports: Vec<Import>,
    pub defines: HashMap<String, String>,
}

/// Read and parse a ZConfig file, taking `$(NAME)` from the process environment.
pub fn parse_file(path: &Path) -> Result<Document, ConfigError> {
    let env = |name: &str| std::env::var(name).ok();
    parse_file_with(path, &env)
}

/// Read and parse a ZConfig file with the given environment lookup.
pub fn parse_file_with(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Document, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, e))?;
    parse_str(&text, path, env)
}

/// Parse ZConfig text; `file` names it in errors and anchors `%include`.
pub fn parse_str(
    text: &str,
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Document, ConfigError> {
    let mut doc = Document {
        root: Section {
            file: file.to_path_buf(),
            ..Section::default()
        },
        ..Document::default()
    };
    let mut parser = Parser {
        env,
        defines: HashMap::new(),
        imports: Vec::new(),
        depth: 0,
    };
    let mut stack: Vec<Section> = Vec::new();
    let mut root = std::mem::take(&mut doc.root);
    parser.parse_into(text, file, &mut root, &mut stack)?;
    if let Some(open) = stack.last() {
        return Err(ConfigError::invalid(
            &open.file,
            Some(open.line),
            None,
            format!("section <{}> is never closed", open.kind),
        ));
    }
    doc.root = root;
    doc.imports = parser.imports;
    doc.defines = parser.defines;
    Ok(doc)
}

/// `%include` nesting limit (an include cycle would otherwise never end).
const MAX_INCLUDE_DEPTH: usize = 32;

struct Parser<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    defines: HashMap<String, String>,
    imports: Vec<Import>,
    depth: usize,
}

fn is_name_char(c: char) -> bool {
    !c.is_whitespace() && c != '(' && c != ')'
}

impl Parser<'_> {
    /// Parse `text`; sections opened in it are pushed on `stack`, values go into the innermost
    /// open section (or `root`). A section must close in the file that opened it, as in ZConfig
    /// (each included file is parsed with its own section stack).
    fn parse_into(
        &mut self,
        text: &str,
        file: &Path,
        root: &mut Section,
        outer: &mut Vec<Section>,
    ) -> Result<(), ConfigError> {
        let mut stack: Vec<Section> = Vec::new();
        let err = |line: usize, msg: String| ConfigError::invalid(file, Some(line), None, msg);
        for (index, raw) in text.lines().enumerate() {
            let lineno = index + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(rest) = line.strip_prefix("</") {
                let Some(rest) = rest.strip_suffix('>') else {
                    return Err(err(lineno, "malformed section end (missing '>')".into()));
                };
                let kind = rest.trim().to_lowercase();
                let Some(open) = stack.pop() else {
                    return Err(err(lineno, format!("</{kind}> closes no open section")));
                };
                if open.kind != kind {
                    return Err(err(
                        lineno,
                        format!(
                            "</{kind}> does not match <{}> opened on line {}",
                            open.kind, open.line
                        ),
                    ));
                }
                current(root, outer, &mut stack).sections.push(open);
            } else if let Some(rest) = line.strip_prefix('<') {
                let Some(rest) = rest.strip_suffix('>') else {
                    return Err(err(lineno, "malformed section start (missing '>')".into()));
                };
                let (rest, empty) = match rest.strip_suffix('/') {
                    Some(r) => (r, true),
                    None => (rest, false),
                };
                let mut words = rest.split_whitespace();
                let (Some(kind), name, None) = (words.next(), words.next(), words.next()) else {
                    return Err(err(lineno, format!("malformed section header <{rest}>")));
                };
                if !kind.chars().all(is_name_char)
                    || !name.is_none_or(|n| n.chars().all(is_name_char))
                {
                    return Err(err(lineno, format!("malformed section header <{rest}>")));
                }
                let section = Section {
                    kind: kind.to_lowercase(),
                    name: name.map(str::to_lowercase),
                    file: file.to_path_buf(),
                    line: lineno,
                    keys: Vec::new(),
                    sections: Vec::new(),
                };
                if empty {
                    current(root, outer, &mut stack).sections.push(section);
                } else {
                    stack.push(section);
                }
            } else if let Some(rest) = line.strip_prefix('%') {
                let (name, arg) = split_key_value(rest);
                let name = name.to_lowercase();
                if !matches!(name.as_str(), "define" | "include" | "import") {
                    return Err(err(
                        lineno,
                        format!("unknown directive %{name} (allowed: %define, %include, %import)"),
                    ));
                }
                if arg.is_empty() {
                    return Err(err(lineno, format!("missing argument to %{name}")));
                }
                match name.as_str() {
                    "define" => {
                        let (defname, value) = split_key_value(arg);
                        let lower = defname.to_lowercase();
                        if !is_substitution_name(&lower) {
                            return Err(err(
                                lineno,
                                format!(
                                    "%define: {defname:?} is not a legal name (letters, digits, _; not starting with a digit)"
                                ),
                            ));
                        }
                        let value = self.subst(value).map_err(|m| err(lineno, m))?;
                        if let Some(old) = self.defines.get(&lower) {
                            if *old != value {
                                return Err(err(lineno, format!("cannot redefine {defname:?}")));
                            }
                        }
                        self.defines.insert(lower, value);
                    }
                    "import" => {
                        let package = self.subst(arg).map_err(|m| err(lineno, m))?;
                        self.imports.push(Import {
                            package,
                            file: file.to_path_buf(),
                            line: lineno,
                        });
                    }
                    _ => {
                        let target = self.subst(arg).map_err(|m| err(lineno, m))?;
                        if target.contains("://") && !target.starts_with("file://") {
                            return Err(err(
                                lineno,
                                format!("%include {target}: only local files can be included"),
                            ));
                        }
                        let target = target.strip_prefix("file://").unwrap_or(&target);
                        let path = file.parent().unwrap_or(Path::new(".")).join(target);
                        if self.depth >= MAX_INCLUDE_DEPTH {
                            return Err(err(
                                lineno,
                                format!(
                                    "%include {}: includes nested too deeply (a cycle?)",
                                    path.display()
                                ),
                            ));
                        }
                        let text = std::fs::read_to_string(&path).map_err(|e| {
                            err(lineno, format!("%include {}: {e}", path.display()))
                        })?;
                        self.depth += 1;
                        // The included file's content lands in the current section.
                        let mut combined: Vec<Section> = outer.clone();
                        combined.append(&mut stack);
                        let result = self.parse_into(&text, &path, root, &mut combined);
                        self.depth -= 1;
                        result?;
                        let keep = outer.len();
                        stack = combined.split_off(keep);
                        *outer = combined;
                    }
                }
            } else {
                let (key, value) = split_key_value(line);
                if key.is_empty() || !key.chars().all(is_name_char) {
                    return Err(err(
                        lineno,
                        format!("malformed line {line:?} (expected `key value`)"),
                    ));
                }
                let value = self
                    .subst(value)
                    .map_err(|m| ConfigError::invalid(file, Some(lineno), Some(key), m))?;
                current(root, outer, &mut stack).keys.push(KeyValue {
                    key: key.to_owned(),
                    value,
                    file: file.to_path_buf(),
                    line: lineno,
                });
            }
        }
        if let Some(open) = stack.last() {
            return Err(ConfigError::invalid(
                &open.file,
                Some(open.line),
                None,
                format!("section <{}> is never closed", open.kind),
            ));
        }
        Ok(())
    }

    fn subst(&self, s: &str) -> Result<String, String> {
        substitute(s, &self.defines, self.env)
    }
}

/// The innermost open section: this file's stack, then the includer's, then the root.
fn current<'s>(
    root: &'s mut Section,
    outer: &'s mut [Section],
    stack: &'s mut [Section],
) -> &'s mut Section {
    if let Some(s) = stack.last_mut() {
        s
    } else if let Some(s) = outer.last_mut() {
        s
    } else {
        root
    }
}

/// `key rest-of-line`, both trimmed. The key ends at white space, as ZConfig's
/// `[^\s()]+\s*(value)`.
fn split_key_value(s: &str) -> (&str, &str) {
    let s = s.trim();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, ""),
    }
}

fn is_substitution_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Length of the substitution name at the start of `s` (`[A-Za-z_][A-Za-z0-9_]*`).
fn name_len(s: &str) -> usize {
    let mut n = 0;
    for (i, c) in s.char_indices() {
        let ok = if i == 0 {
            c.is_ascii_alphabetic() || c == '_'
        } else {
            c.is_ascii_alphanumeric() || c == '_'
        };
        if !ok {
            break;
        }
        n = i + c.len_utf8();
    }
    n
}

/// ZConfig substitution: `$name`, `${name}` (defines, case-insensitive), `$(NAME)` (the
/// environment, case kept), `$$` → `$`. Replacements are not substituted again.
pub fn substitute(
    s: &str,
    defines: &HashMap<String, String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, from_env, tail) = match after.chars().next() {
            None => {
                return Err(format!(
                    "{s:?}: lone '$' at the end (write $$ for a dollar sign)"
                ));
            }
            Some('$') => {
                out.push('$');
                rest = &after[1..];
                continue;
            }
            Some(open @ ('{' | '(')) => {
                let close = if open == '{' { '}' } else { ')' };
                let inner = &after[1..];
                let n = name_len(inner);
                if n == 0 {
                    return Err(format!("{s:?}: '${open}' not followed by a name"));
                }
                if !inner[n..].starts_with(close) {
                    return Err(format!(
                        "{s:?}: '${open}{}' not followed by '{close}'",
                        &inner[..n]
                    ));
                }
                (&inner[..n], open == '(', &inner[n + 1..])
            }
            Some(_) => {
                let n = name_len(after);
                if n == 0 {
                    return Err(format!("{s:?}: '$' not followed by '$' or a name"));
                }
                (&after[..n], false, &after[n..])
            }
        };
        let value = if from_env {
            env(name)
        } else {
            defines.get(&name.to_lowercase()).cloned()
        };
        match value {
            Some(v) => out.push_str(&v),
            None if from_env => {
                return Err(format!(
                    "environment variable {name} is not set (used as $({name}))"
                ));
            }
            None => return Err(format!("${name} is not defined (use %define {name} VALUE)")),
        }
        rest = tail;
    }
    out.push_str(rest);
    Ok(out)
}

impl Section {
    /// Subsections of this type.
    pub fn sections_of<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Section> + 'a {
        self.sections.iter().filter(move |s| s.kind == kind)
    }

    /// How the section is written, for messages: `<filestorage 1>`.
    pub fn header(&self) -> String {
        match &self.name {
            Some(n) => format!("<{} {}>", self.kind, n),
            None => format!("<{}>", self.kind),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn defs(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn substitution_forms() {
        let d = defs(&[("instance", "/srv/zeo")]);
        let env = |n: &str| (n == "HOME").then(|| "/home/z".to_owned());
        assert_eq!(
            substitute("$INSTANCE/var", &d, &env).unwrap(),
            "/srv/zeo/var"
        );
        assert_eq!(substitute("${instance}x", &d, &env).unwrap(), "/srv/zeox");
        assert_eq!(substitute("$(HOME)/a", &d, &env).unwrap(), "/home/z/a");
        assert_eq!(substitute("$$5 a$$", &d, &env).unwrap(), "$5 a$");
        assert_eq!(substitute("no dollars", &d, &env).unwrap(), "no dollars");
        for bad in [
            "$",
            "a$",
            "${x",
            "${}",
            "$(",
            "$-",
            "$undefined",
            "$(NOPE)",
            "${instance",
        ] {
            assert!(substitute(bad, &d, &env).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_sections_keys_and_defines() {
        let text = "\
# comment
%define INSTANCE /srv/zeo
%import zc.zrs
<zeo>
  address 8100
  backoff 5 # not a comment
</zeo>
<FileStorage 1>
  path $INSTANCE/var/Data.fs
  empty
</filestorage>
<mappingstorage temp/>
";
        let doc = parse_str(text, Path::new("zeo.conf"), &no_env).unwrap();
        let root = &doc.root;
        assert_eq!(root.sections.len(), 3);
        let zeo = &root.sections[0];
        assert_eq!(zeo.kind, "zeo");
        assert_eq!(zeo.keys[1].value, "5 # not a comment");
        let fs = &root.sections[1];
        assert_eq!(
            (fs.kind.as_str(), fs.name.as_deref()),
            ("filestorage", Some("1"))
        );
        assert_eq!(fs.keys[0].value, "/srv/zeo/var/Data.fs");
        assert_eq!(fs.keys[0].line, 9);
        assert_eq!(fs.keys[1].value, "");
        assert_eq!(root.sections[2].name.as_deref(), Some("temp"));
        assert_eq!(doc.imports[0].package, "zc.zrs");
        assert_eq!(doc.imports[0].line, 3);
    }

    #[test]
    fn syntax_errors_name_the_line() {
        for (text, line) in [
            ("<zeo>\n", 1),
            ("</zeo>\n", 1),
            ("<zeo>\n</runner>\n", 2),
            ("<zeo\n", 1),
            ("%define A 1\n%define a 2\n", 2),
            ("%frobnicate x\n", 1),
            ("a\n<x>\n b $nope\n</x>\n", 3),
            ("<a b c>\n</a>\n", 1),
        ] {
            let e = parse_str(text, Path::new("f.conf"), &no_env).unwrap_err();
            assert_eq!(e.line(), Some(line), "{text:?}: {e}");
        }
    }

    #[test]
    fn include_lands_in_the_current_section() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("storage.conf"), "path $INSTANCE/Data.fs\n").unwrap();
        std::fs::write(
            dir.path().join("zeo.conf"),
            "%define INSTANCE /i\n<filestorage 1>\n%include storage.conf\n</filestorage>\n",
        )
        .unwrap();
        let doc = parse_file_with(&dir.path().join("zeo.conf"), &no_env).unwrap();
        let fs = &doc.root.sections[0];
        assert_eq!(fs.keys[0].value, "/i/Data.fs");
        assert!(fs.keys[0].file.ends_with("storage.conf"));
        // A self-include stops with an error instead of recursing for ever.
        std::fs::write(dir.path().join("loop.conf"), "%include loop.conf\n").unwrap();
        assert!(parse_file_with(&dir.path().join("loop.conf"), &no_env).is_err());
    }

    /// ZConfig text for a section tree (values escaped with `$$`).
    fn render(s: &Section, indent: usize, out: &mut String) {
        let pad = " ".repeat(indent);
        for kv in &s.keys {
            out.push_str(&format!(
                "{pad}{} {}\n",
                kv.key,
                kv.value.replace('$', "$$")
            ));
        }
        for sub in &s.sections {
            match &sub.name {
                Some(n) => out.push_str(&format!("{pad}<{} {n}>\n", sub.kind)),
                None => out.push_str(&format!("{pad}<{}>\n", sub.kind)),
            }
            render(sub, indent + 2, out);
            out.push_str(&format!("{pad}</{}>\n", sub.kind));
        }
    }

    /// Kind, name, keys and subsections without positions, for comparing trees.
    #[derive(Debug, PartialEq)]
    struct SectionShape {
        kind: String,
        name: Option<String>,
        keys: Vec<(String, String)>,
        sections: Vec<SectionShape>,
    }

    fn shape(s: &Section) -> SectionShape {
        SectionShape {
            kind: s.kind.clone(),
            name: s.name.clone(),
            keys: s
                .keys
                .iter()
                .map(|k| (k.key.clone(), k.value.clone()))
                .collect(),
            sections: s.sections.iter().map(shape).collect(),
        }
    }

    fn section_tree() -> impl Strategy<Value = Section> {
        let kv =
            ("[a-zA-Z][a-zA-Z0-9_-]{0,8}", "[!-~]([ -~]{0,16}[!-~])?").prop_map(|(key, value)| {
                KeyValue {
                    key,
                    value,
                    file: PathBuf::new(),
                    line: 0,
                }
            });
        let leaf = (
            "[a-z][a-z0-9_-]{0,8}",
            proptest::option::of("[a-z0-9][a-z0-9_.-]{0,6}"),
            proptest::collection::vec(kv.clone(), 0..4),
        )
            .prop_map(|(kind, name, keys)| Section {
                kind,
                name,
                keys,
                ..Section::default()
            });
        leaf.prop_recursive(3, 16, 4, move |inner| {
            (
                "[a-z][a-z0-9_-]{0,8}",
                proptest::option::of("[a-z0-9][a-z0-9_.-]{0,6}"),
                proptest::collection::vec(kv.clone(), 0..3),
                proptest::collection::vec(inner, 0..3),
            )
                .prop_map(|(kind, name, keys, sections)| Section {
                    kind,
                    name,
                    keys,
                    sections,
                    ..Section::default()
                })
        })
    }

    proptest! {
        /// Any section tree written as ZConfig text parses back to the same tree.
        #[test]
        fn written_trees_parse_back(root in proptest::collection::vec(section_tree(), 0..4)) {
            let root = Section { sections: root, ..Section::default() };
            let mut text = String::new();
            render(&root, 0, &mut text);
            let doc = parse_str(&text, Path::new("p.conf"), &no_env)
                .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            prop_assert_eq!(shape(&doc.root), shape(&root));
        }
    }

    proptest! {
        #[test]
        fn text_without_dollars_is_unchanged(s in "[^$]{0,60}") {
            prop_assert_eq!(substitute(&s, &HashMap::new(), &no_env).unwrap(), s);
        }

        #[test]
        fn doubled_dollars_are_literal(s in "[^$]{0,20}", t in "[^$]{0,20}") {
            let text = format!("{s}$${t}");
            prop_assert_eq!(substitute(&text, &HashMap::new(), &no_env).unwrap(), format!("{s}${t}"));
        }

        #[test]
        fn defines_are_substituted(name in "[a-zA-Z_][a-zA-Z0-9_]{0,8}", value in "[^$]{0,20}", tail in "[^$a-zA-Z0-9_]{0,5}") {
            let d = defs(&[(&name.to_lowercase(), &value)]);
            prop_assert_eq!(substitute(&format!("${name}{tail}"), &d, &no_env).unwrap(), format!("{value}{tail}"));
            prop_assert_eq!(substitute(&format!("${{{name}}}x"), &d, &no_env).unwrap(), format!("{value}x"));
        }

        #[test]
        fn parser_never_panics(text in "[ -~\n]{0,200}") {
            let _ = parse_str(&text, Path::new("p.conf"), &no_env);
        }
    }
}
