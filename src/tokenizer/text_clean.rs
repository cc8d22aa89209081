//! CLIP's text cleaning: `basic_clean` and `whitespace_clean` from `simple_tokenizer.py`.
//!
//! ```text
//! basic_clean(t)      = strip(html.unescape(html.unescape(ftfy.fix_text(t))))
//! whitespace_clean(t) = strip(re.sub(r"\s+", " ", t))
//! ```
//!
//! [`fix_text`] ports the parts of `ftfy.fix_text` (ftfy 6.3.1, default config) that a
//! table and a loop can do, in ftfy's order, repeated until the text stops changing:
//! HTML entities (`unescape_html="auto"`: only while no line so far held a `<`),
//! C1 controls read as Windows-1252, Latin ligatures, halfwidth/fullwidth forms, curly
//! quotes, line breaks, ANSI terminal escapes and control characters.
//!
//! What differs from ftfy, on purpose (each needs a large heuristic or table):
//! - **no mojibake repair** (`fix_encoding`): `"cafÃ©"` stays `"cafÃ©"`; ftfy gives `"café"`;
//! - **no NFC normalisation**: `"e\u{301}"` stays two code points; ftfy composes `"é"` (and
//!   NFC's canonical reordering of stacked marks, e.g. Arabic shadda + fatha, is not done);
//! - ftfy cuts lines longer than 10^6 characters into separate segments; here a line is one
//!   segment whatever its length;
//! - the ANSI escape pattern `\x1b[` digits `;` letter accepts ASCII digits only (Python's `\d`
//!   also takes other scripts' decimal digits).
//!
//! The golden fixture (`tests/golden/clip_tokenizer.json`) marks the strings where the first
//! two matter and stores the ids CLIP gives without them; `tests/clip_tokenizer.rs` checks both.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::clip_tables::{
    C1_AS_WINDOWS_1252, HTML5_ENTITIES, INVALID_CHARREFS, INVALID_CODEPOINTS, WIDTH_MAP,
};
use super::pretokenize::in_ranges;

/// `basic_clean`: ftfy's fixes, HTML unescaping twice, then strip.
pub fn basic_clean(text: &str) -> String {
    let text = fix_text(text);
    let text = html_unescape(&html_unescape(&text));
    text.trim().to_string()
}

/// `whitespace_clean`: every run of Unicode white space becomes one space, then strip.
///
/// Python `regex`'s `\s` is the Unicode `White_Space` property, as is [`char::is_whitespace`].
pub fn whitespace_clean(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The subset of `ftfy.fix_text` described in the module docs.
pub fn fix_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // ftfy turns HTML unescaping off for good at the first line holding a '<' (it looks like HTML).
    let mut unescape = true;
    for segment in text.split_inclusive('\n') {
        if segment.contains('<') {
            unescape = false;
        }
        out.push_str(&fix_segment(segment, unescape));
    }
    out
}

/// ftfy's `fix_and_explain` loop on one line: apply every fixer until nothing changes.
fn fix_segment(segment: &str, unescape: bool) -> String {
    let mut text = segment.to_string();
    loop {
        let before = text.clone();
        if unescape {
            text = ftfy_unescape_html(&text);
        }
        text = fix_c1_controls(&text);
        text = fix_latin_ligatures(&text);
        text = fix_character_width(&text);
        text = uncurl_quotes(&text);
        text = fix_line_breaks(&text);
        text = remove_terminal_escapes(&text);
        text = remove_control_chars(&text);
        if text == before {
            return text;
        }
    }
}

/// Map each char through `f`, which returns `None` to keep it unchanged.
fn map_chars(text: &str, f: impl Fn(char) -> Option<&'static str>) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match f(c) {
            Some(s) => out.push_str(s),
            None => out.push(c),
        }
    }
    out
}

/// C1 controls U+0080..U+009F are read as the Windows-1252 bytes they most likely were.
fn fix_c1_controls(text: &str) -> String {
    text.chars()
        .map(|c| match c as u32 {
            b @ 0x80..=0x9F => C1_AS_WINDOWS_1252[(b - 0x80) as usize].1,
            _ => c,
        })
        .collect()
}

/// Latin typographic ligatures and legacy digraphs, e.g. `ﬁ` -> `fi`.
fn fix_latin_ligatures(text: &str) -> String {
    map_chars(text, |c| {
        Some(match c {
            'Ĳ' => "IJ",
            'ĳ' => "ij",
            'ŉ' => "ʼn",
            'Ǳ' => "DZ",
            'ǲ' => "Dz",
            'ǳ' => "dz",
            'Ǆ' => "DŽ",
            'ǅ' => "Dž",
            'ǆ' => "dž",
            'Ǉ' => "LJ",
            'ǈ' => "Lj",
            'ǉ' => "lj",
            'Ǌ' => "NJ",
            'ǋ' => "Nj",
            'ǌ' => "nj",
            'ﬀ' => "ff",
            'ﬁ' => "fi",
            'ﬂ' => "fl",
            'ﬃ' => "ffi",
            'ﬄ' => "ffl",
            'ﬅ' => "ſt",
            'ﬆ' => "st",
            _ => return None,
        })
    })
}

/// Halfwidth and fullwidth forms (U+FF01..U+FFEF) and U+3000 to their standard width.
fn fix_character_width(text: &str) -> String {
    map_chars(text, |c| {
        let cp = c as u32;
        if cp != 0x3000 && !(0xFF01..0xFFF0).contains(&cp) {
            return None;
        }
        WIDTH_MAP.binary_search_by_key(&cp, |&(k, _)| k).ok().map(|i| WIDTH_MAP[i].1)
    })
}

/// Curly quotes to straight ones: U+02BC, U+2018..U+201B -> `'`; U+201C..U+201F -> `"`.
fn uncurl_quotes(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\u{2bc}' | '\u{2018}'..='\u{201b}' => '\'',
            '\u{201c}'..='\u{201f}' => '"',
            _ => c,
        })
        .collect()
}

/// `\r\n`, `\r`, U+2028, U+2029 and U+0085 all become `\n`.
fn fix_line_breaks(text: &str) -> String {
    text.replace("\r\n", "\n").replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n")
}

/// Drop ANSI terminal escapes: `ESC [` then digits and `;`, then one ASCII letter.
fn remove_terminal_escapes(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\u{1b}' && chars.get(i + 1) == Some(&'[') {
            let mut j = i + 2;
            while j < chars.len() && (chars[j].is_ascii_digit() || chars[j] == ';') {
                j += 1;
            }
            if j < chars.len() && chars[j].is_ascii_alphabetic() {
                i = j + 1;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// Remove control characters that are never meant: U+00..U+08, U+0B, U+0E..U+1F, U+7F,
/// U+206A..U+206F, U+FEFF and U+FFF9..U+FFFC. Tabs, line breaks and joiners are kept.
fn remove_control_chars(text: &str) -> String {
    text.chars()
        .filter(|&c| {
            !matches!(c as u32,
                0x00..=0x08 | 0x0B | 0x0E..=0x1F | 0x7F | 0x206A..=0x206F | 0xFEFF | 0xFFF9..=0xFFFC)
        })
        .collect()
}

/// `html.entities.html5` as a map from name (with or without `;`) to text.
fn html5() -> &'static HashMap<&'static str, &'static str> {
    static MAP: OnceLock<HashMap<&'static str, &'static str>> = OnceLock::new();
    MAP.get_or_init(|| HTML5_ENTITIES.iter().copied().collect())
}

/// ftfy's `HTML_ENTITIES`: `&name;` for every HTML5 name ending in `;`, plus the upper-case
/// spelling of each lower-case name (`&EACUTE;` -> `É`) where that spelling is not already
/// an entity of its own.
fn ftfy_entities() -> &'static HashMap<String, String> {
    static MAP: OnceLock<HashMap<String, String>> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut map = HashMap::new();
        for &(name, value) in HTML5_ENTITIES.iter().filter(|(n, _)| n.ends_with(';')) {
            map.insert(format!("&{name}"), value.to_string());
            if name == name.to_lowercase() {
                let upper = format!("&{}", name.to_uppercase());
                if html_unescape(&upper) == upper {
                    map.insert(upper, value.to_uppercase());
                }
            }
        }
        map
    })
}

/// ftfy's `unescape_html`: replace `&#?[0-9A-Za-z]{1,24};` when it is a known entity, or a
/// numeric reference that `html.unescape` decodes whole, until none is left.
///
/// [`fix_segment`] repeats its fixers until the text stops changing, and one pass of
/// `unescape_html` peels one level of `&amp;amp;amp;...`: n levels took n passes over
/// the whole text (21 s for 100 KB). This pass reaches the same end in one go: the
/// output is a stack, and each `;` pushed is checked against the entity that ends
/// there, including one that a replacement just completed (`&amp;` + `amp;` -> `&amp;` -> `&`).
fn ftfy_unescape_html(text: &str) -> String {
    let mut out: Vec<char> = Vec::with_capacity(text.len());
    for c in text.chars() {
        out.push(c);
        // A replacement may itself end in ';' (`&semi;`) and complete another entity.
        while out.last() == Some(&';') {
            let Some(replacement) = entity_ending_at(&out) else { break };
            let (start, value) = replacement;
            out.truncate(start);
            out.extend(value.chars());
        }
    }
    out.into_iter().collect()
}

/// The entity `&#?[0-9A-Za-z]{1,24};` that ends `out` (at its last char, a `;`), if
/// ftfy replaces it: its start and replacement.
fn entity_ending_at(out: &[char]) -> Option<(usize, String)> {
    let semi = out.len() - 1;
    let run = out[..semi].iter().rev().take(25).take_while(|c| c.is_ascii_alphanumeric()).count();
    if !(1..=24).contains(&run) {
        return None;
    }
    let mut start = semi - run;
    let numeric = start >= 2 && out[start - 1] == '#' && out[start - 2] == '&';
    if numeric {
        start -= 2;
    } else if start >= 1 && out[start - 1] == '&' {
        start -= 1;
    } else {
        return None;
    }
    let entity: String = out[start..].iter().collect();
    if let Some(value) = ftfy_entities().get(&entity) {
        return Some((start, value.clone()));
    }
    if numeric {
        let decoded = html_unescape(&entity);
        // A numeric reference only partly decoded keeps its ';': leave it alone.
        if !decoded.contains(';') {
            return Some((start, decoded));
        }
    }
    None
}

/// Python's `html.unescape`: numeric references (`&#65;`, `&#x41;`, `;` optional, with
/// HTML5's replacements for invalid ones) and named references (`&amp;`, and the legacy
/// names without `;` as the longest known prefix: `&ampx` -> `&x`).
pub fn html_unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '&' {
            if let Some((replacement, next)) = charref_at(&chars, i + 1) {
                out.push_str(&replacement);
                i = next;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// Match `#[0-9]+;?`, `#[xX][0-9a-fA-F]+;?` or `[^\t\n\f <&#;]{1,32};?` at `chars[at..]`;
/// return the replacement and the index after the match.
fn charref_at(chars: &[char], at: usize) -> Option<(String, usize)> {
    let run = |from: usize, max: usize, ok: &dyn Fn(char) -> bool| {
        let mut end = from;
        while end < chars.len() && end - from < max && ok(chars[end]) {
            end += 1;
        }
        end
    };
    let semicolon = |end: usize| if chars.get(end) == Some(&';') { end + 1 } else { end };
    if chars.get(at) == Some(&'#') {
        let (digits_from, radix) = match chars.get(at + 1) {
            Some('x' | 'X') => (at + 2, 16),
            _ => (at + 1, 10),
        };
        let end = run(digits_from, usize::MAX, &|c| c.is_digit(radix));
        if end == digits_from {
            return None;
        }
        let digits: String = chars[digits_from..end].iter().collect();
        // Any value past U+10FFFF decodes the same, so saturate instead of overflowing.
        let code = u32::from_str_radix(&digits, radix).unwrap_or(u32::MAX);
        return Some((numeric_charref(code), semicolon(end)));
    }
    let end = run(at, 32, &|c| !matches!(c, '\t' | '\n' | '\u{c}' | ' ' | '<' | '&' | '#' | ';'));
    if end == at {
        return None;
    }
    let next = semicolon(end);
    let name: String = chars[at..next].iter().collect();
    if let Some(value) = html5().get(name.as_str()) {
        return Some((value.to_string(), next));
    }
    // The longest prefix (of at least 2 chars) that is an entity name, then the rest as is.
    let name_chars: Vec<char> = name.chars().collect();
    for len in (2..name_chars.len()).rev() {
        let prefix: String = name_chars[..len].iter().collect();
        if let Some(value) = html5().get(prefix.as_str()) {
            let rest: String = name_chars[len..].iter().collect();
            return Some((format!("{value}{rest}"), next));
        }
    }
    Some((format!("&{name}"), next))
}

/// `html._replace_charref` for a numeric reference.
fn numeric_charref(code: u32) -> String {
    if let Ok(i) = INVALID_CHARREFS.binary_search_by_key(&code, |&(k, _)| k) {
        return INVALID_CHARREFS[i].1.to_string();
    }
    if (0xD800..=0xDFFF).contains(&code) || code > 0x10FFFF {
        return '\u{FFFD}'.to_string();
    }
    if in_ranges(INVALID_CODEPOINTS, code) {
        return String::new();
    }
    char::from_u32(code).map(String::from).unwrap_or_default()
}
