//! The Databricks SQL subset of `migrations/*.sql`: the DDL that applies to
//! Delta tables, parsed so that lakestream can apply the same files.
//!
//! ```text
//! CREATE TABLE [IF NOT EXISTS] name (column, ...) USING DELTA
//!     [PARTITIONED BY (col, ...)] [COMMENT '...'] [TBLPROPERTIES ('k' = 'v', ...)]
//! ALTER TABLE name ADD COLUMNS (column, ...)
//! ALTER TABLE name SET TBLPROPERTIES ('k' = 'v', ...)
//! ALTER TABLE name ADD CONSTRAINT name CHECK (expression)
//! column := name TYPE [NOT NULL] [COMMENT '...']
//! ```
//! `--` comments, `'…'` strings (`''` for a quote) and `` `…` `` identifiers.
//! Anything else is an error naming the file, the line and what was expected.

use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// As written, e.g. `DECIMAL(10,2)`; parsed by [`crate::tables::definition::parse_type`].
    pub type_text: String,
    pub nullable: bool,
    pub comment: Option<String>,
    pub line: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Statement {
    CreateTable {
        table: String,
        if_not_exists: bool,
        columns: Vec<Column>,
        partitioned_by: Vec<String>,
        comment: Option<String>,
        properties: BTreeMap<String, String>,
    },
    AddColumns { table: String, columns: Vec<Column> },
    SetProperties { table: String, properties: BTreeMap<String, String> },
    AddConstraint { table: String, name: String, expression: String },
}

impl Statement {
    pub fn table(&self) -> &str {
        match self {
            Statement::CreateTable { table, .. }
            | Statement::AddColumns { table, .. }
            | Statement::SetProperties { table, .. }
            | Statement::AddConstraint { table, .. } => table,
        }
    }
}

/// A statement and the line it starts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    pub line: usize,
    pub statement: Statement,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Word(String),
    Quoted(String),
    Ident(String),
    Punct(char),
}

#[derive(Clone, Debug)]
struct Tok {
    token: Token,
    line: usize,
    start: usize,
    end: usize,
}

fn tokenize(text: &str) -> Result<Vec<Tok>, (usize, String)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    while i < bytes.len() {
        let c = bytes[i] as char;
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            c if c.is_whitespace() => i += 1,
            '-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            '\'' | '`' => {
                let (start, start_line) = (i, line);
                let mut value = String::new();
                i += 1;
                loop {
                    let Some(&b) = bytes.get(i) else {
                        return Err((start_line, format!("unterminated {c}")));
                    };
                    if b as char == c {
                        if bytes.get(i + 1) == Some(&b) {
                            value.push(c);
                            i += 2;
                            continue;
                        }
                        i += 1;
                        break;
                    }
                    if b == b'\n' {
                        line += 1;
                    }
                    let ch = text[i..].chars().next().unwrap();
                    value.push(ch);
                    i += ch.len_utf8();
                }
                let token = if c == '\'' { Token::Quoted(value) } else { Token::Ident(value) };
                out.push(Tok { token, line: start_line, start, end: i });
            }
            c if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '$' || c == '{' || c == '}' => {
                let start = i;
                while i < bytes.len() && {
                    let d = bytes[i] as char;
                    d.is_ascii_alphanumeric() || d == '_' || d == '.' || d == '$' || d == '{' || d == '}'
                } {
                    i += 1;
                }
                out.push(Tok { token: Token::Word(text[start..i].to_string()), line, start, end: i });
            }
            '(' | ')' | ',' | '=' | '<' | '>' | ';' => {
                out.push(Tok { token: Token::Punct(c), line, start: i, end: i + 1 });
                i += 1;
            }
            other => return Err((line, format!("unexpected character `{other}`"))),
        }
    }
    Ok(out)
}

struct Parser<'a> {
    text: &'a str,
    toks: Vec<Tok>,
    pos: usize,
}

type ParseResult<T> = Result<T, (usize, String)>;

impl Parser<'_> {
    fn line(&self) -> usize {
        self.toks.get(self.pos).or(self.toks.last()).map_or(1, |t| t.line)
    }
    fn err<T>(&self, what: &str) -> ParseResult<T> {
        let found = match self.toks.get(self.pos).map(|t| &t.token) {
            None => "the end of the file".to_string(),
            Some(Token::Word(w)) => format!("`{w}`"),
            Some(Token::Quoted(q)) => format!("'{q}'"),
            Some(Token::Ident(q)) => format!("`{q}`"),
            Some(Token::Punct(p)) => format!("`{p}`"),
        };
        Err((self.line(), format!("expected {what}, found {found}")))
    }
    fn peek_word(&self, word: &str) -> bool {
        matches!(self.toks.get(self.pos).map(|t| &t.token), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word))
    }
    fn keyword(&mut self, word: &str) -> ParseResult<()> {
        if self.peek_word(word) {
            self.pos += 1;
            Ok(())
        } else {
            self.err(&word.to_ascii_uppercase())
        }
    }
    fn keywords(&mut self, words: &[&str]) -> ParseResult<()> {
        words.iter().try_for_each(|w| self.keyword(w))
    }
    fn peek_punct(&self, p: char) -> bool {
        matches!(self.toks.get(self.pos).map(|t| &t.token), Some(Token::Punct(c)) if *c == p)
    }
    fn punct(&mut self, p: char) -> ParseResult<()> {
        if self.peek_punct(p) {
            self.pos += 1;
            Ok(())
        } else {
            self.err(&format!("`{p}`"))
        }
    }
    fn name(&mut self) -> ParseResult<String> {
        match self.toks.get(self.pos).map(|t| t.token.clone()) {
            Some(Token::Word(w)) | Some(Token::Ident(w)) => {
                self.pos += 1;
                Ok(w)
            }
            _ => self.err("a name"),
        }
    }
    fn string(&mut self) -> ParseResult<String> {
        match self.toks.get(self.pos).map(|t| t.token.clone()) {
            Some(Token::Quoted(s)) => {
                self.pos += 1;
                Ok(s)
            }
            _ => self.err("a 'string'"),
        }
    }
    /// A type: tokens up to `,` or `)` outside brackets, or NOT / COMMENT.
    fn type_text(&mut self) -> ParseResult<String> {
        let start = self.pos;
        let mut depth = 0i32;
        while let Some(t) = self.toks.get(self.pos) {
            match &t.token {
                Token::Punct('(') | Token::Punct('<') => depth += 1,
                Token::Punct(')') | Token::Punct('>') if depth > 0 => depth -= 1,
                Token::Punct(',') | Token::Punct(')') if depth == 0 => break,
                Token::Word(w) if depth == 0 && (w.eq_ignore_ascii_case("NOT") || w.eq_ignore_ascii_case("COMMENT")) => break,
                _ => {}
            }
            self.pos += 1;
        }
        if self.pos == start {
            return self.err("a type");
        }
        Ok(self.text[self.toks[start].start..self.toks[self.pos - 1].end].to_string())
    }
    fn columns(&mut self) -> ParseResult<Vec<Column>> {
        self.punct('(')?;
        let mut columns = Vec::new();
        loop {
            let line = self.line();
            let name = self.name()?;
            let type_text = self.type_text()?;
            let mut nullable = true;
            let mut comment = None;
            loop {
                if self.peek_word("NOT") {
                    self.keywords(&["NOT", "NULL"])?;
                    nullable = false;
                } else if self.peek_word("COMMENT") {
                    self.keyword("COMMENT")?;
                    comment = Some(self.string()?);
                } else {
                    break;
                }
            }
            columns.push(Column { name, type_text, nullable, comment, line });
            if self.peek_punct(',') {
                self.punct(',')?;
                continue;
            }
            self.punct(')')?;
            return Ok(columns);
        }
    }
    fn properties(&mut self) -> ParseResult<BTreeMap<String, String>> {
        self.punct('(')?;
        let mut out = BTreeMap::new();
        loop {
            let k = self.string()?;
            self.punct('=')?;
            let v = self.string()?;
            out.insert(k, v);
            if self.peek_punct(',') {
                self.punct(',')?;
                continue;
            }
            self.punct(')')?;
            return Ok(out);
        }
    }
    fn names(&mut self) -> ParseResult<Vec<String>> {
        self.punct('(')?;
        let mut out = vec![self.name()?];
        while self.peek_punct(',') {
            self.punct(',')?;
            out.push(self.name()?);
        }
        self.punct(')')?;
        Ok(out)
    }
    /// The raw text between balanced parentheses.
    fn parenthesised_text(&mut self) -> ParseResult<String> {
        self.punct('(')?;
        let start = self.pos;
        let mut depth = 1;
        while let Some(t) = self.toks.get(self.pos) {
            match t.token {
                Token::Punct('(') => depth += 1,
                Token::Punct(')') => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            self.pos += 1;
        }
        if depth != 0 || self.pos == start {
            return self.err("a parenthesised expression");
        }
        let text = self.text[self.toks[start].start..self.toks[self.pos - 1].end].to_string();
        self.punct(')')?;
        Ok(text)
    }
    fn statement(&mut self) -> ParseResult<Statement> {
        if self.peek_word("CREATE") {
            self.keywords(&["CREATE", "TABLE"])?;
            let mut if_not_exists = false;
            if self.peek_word("IF") {
                self.keywords(&["IF", "NOT", "EXISTS"])?;
                if_not_exists = true;
            }
            let table = self.name()?;
            let columns = self.columns()?;
            self.keywords(&["USING", "DELTA"])?;
            let (mut partitioned_by, mut comment, mut properties) = (Vec::new(), None, BTreeMap::new());
            loop {
                if self.peek_word("PARTITIONED") {
                    self.keywords(&["PARTITIONED", "BY"])?;
                    partitioned_by = self.names()?;
                } else if self.peek_word("COMMENT") {
                    self.keyword("COMMENT")?;
                    comment = Some(self.string()?);
                } else if self.peek_word("TBLPROPERTIES") {
                    self.keyword("TBLPROPERTIES")?;
                    properties = self.properties()?;
                } else {
                    break;
                }
            }
            return Ok(Statement::CreateTable { table, if_not_exists, columns, partitioned_by, comment, properties });
        }
        if self.peek_word("ALTER") {
            self.keywords(&["ALTER", "TABLE"])?;
            let table = self.name()?;
            if self.peek_word("SET") {
                self.keywords(&["SET", "TBLPROPERTIES"])?;
                return Ok(Statement::SetProperties { table, properties: self.properties()? });
            }
            self.keyword("ADD")?;
            if self.peek_word("COLUMNS") {
                self.keyword("COLUMNS")?;
                return Ok(Statement::AddColumns { table, columns: self.columns()? });
            }
            if self.peek_word("CONSTRAINT") {
                self.keyword("CONSTRAINT")?;
                let name = self.name()?;
                self.keyword("CHECK")?;
                return Ok(Statement::AddConstraint { table, name, expression: self.parenthesised_text()? });
            }
            return self.err("COLUMNS or CONSTRAINT");
        }
        self.err("CREATE TABLE or ALTER TABLE (lakestream applies only Delta DDL)")
    }
}

/// Parses a migration file; errors are (line, reason).
pub fn parse(text: &str) -> Result<Vec<Located>, (usize, String)> {
    let toks = tokenize(text)?;
    let mut p = Parser { text, toks, pos: 0 };
    let mut out = Vec::new();
    while p.pos < p.toks.len() {
        if p.peek_punct(';') {
            p.pos += 1;
            continue;
        }
        let line = p.line();
        let statement = p.statement()?;
        if p.pos < p.toks.len() {
            p.punct(';')?;
        }
        out.push(Located { line, statement });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_ddl_subset() {
        let text = "-- a comment; with a semicolon\n\
            CREATE TABLE IF NOT EXISTS t (\n  `key` STRING NOT NULL COMMENT 'it''s',\n  price DECIMAL(10, 2),\n  h MAP<STRING, STRING>\n) USING DELTA\n\
            PARTITIONED BY (`key`) TBLPROPERTIES ('delta.appendOnly' = 'true');\n\
            ALTER TABLE t ADD COLUMNS (x TIMESTAMP COMMENT 'new');\n\
            ALTER TABLE t SET TBLPROPERTIES ('a' = 'b');\n\
            alter table t add constraint positive check (price > 0 AND (x IS NULL OR x > '2020-01-01'));";
        let s = parse(text).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].line, 2);
        let Statement::CreateTable { columns, partitioned_by, properties, .. } = &s[0].statement else { panic!() };
        assert_eq!(columns[0], Column { name: "key".into(), type_text: "STRING".into(), nullable: false, comment: Some("it's".into()), line: 3 });
        assert_eq!(columns[1].type_text, "DECIMAL(10, 2)");
        assert_eq!(columns[2].type_text, "MAP<STRING, STRING>");
        assert_eq!(partitioned_by, &["key"]);
        assert_eq!(properties["delta.appendOnly"], "true");
        assert_eq!(
            s[3].statement,
            Statement::AddConstraint { table: "t".into(), name: "positive".into(), expression: "price > 0 AND (x IS NULL OR x > '2020-01-01')".into() }
        );
    }

    #[test]
    fn errors_name_the_line_and_what_was_expected() {
        assert_eq!(parse("CREATE TABLE t (a INT)\nUSING PARQUET;").unwrap_err(), (2, "expected DELTA, found `PARQUET`".into()));
        assert_eq!(parse("\n\nDROP TABLE t;").unwrap_err().0, 3);
        assert!(parse("ALTER TABLE t ADD COLUMNS (a INT").unwrap_err().1.contains("found the end of the file"));
        assert!(parse("ALTER TABLE t SET TBLPROPERTIES ('a' = 'b)").unwrap_err().1.contains("unterminated"));
    }
}
