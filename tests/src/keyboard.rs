//! Typing on the emulated keyboard: characters to the key names of QEMU's
//! `sendkey` command.
//!
//! `sendkey KEYS [HOLD_MS]` (human monitor) presses the keys of one
//! combination in order (`shift-a`, `ctrl-c`), holds them HOLD_MS (100 ms
//! unless given) and releases them in reverse order. QEMU queues keyboard
//! events behind a pending hold, so key strokes sent one command after
//! another arrive in order even when the next command comes before the
//! last release.
//!
//! The events go to the keyboard QEMU activated last: the q35 machine's
//! PS/2 keyboard, or a `usb-kbd` when one is attached (QEMU activates a USB
//! keyboard when it is created, so the PS/2 keyboard then gets nothing, and
//! the USB keyboard's own queue of 16 events fills while the guest does not
//! poll it).
//!
//! The names are QEMU's `QKeyCode` names on a US layout, which is the
//! layout the guest's keymap assumes. A character with no key on that
//! layout cannot be typed: [`keys_for`] says which.

/// The `sendkey` combination that types `c`, or `None` for a character
/// with no key on a US keyboard. Enter is `\r` or `\n`, Backspace `\x08` or
/// `\x7f`, Escape `\x1b`, and the other control characters `\x01`..`\x1a`
/// are Ctrl with a letter (`\x03` is `ctrl-c`).
pub fn key_for(c: char) -> Option<String> {
    let named = match c {
        '\r' | '\n' => "ret",
        '\t' => "tab",
        '\x08' | '\x7f' => "backspace",
        '\x1b' => "esc",
        ' ' => "spc",
        _ => "",
    };
    if !named.is_empty() {
        return Some(named.into());
    }
    if c.is_ascii_lowercase() || c.is_ascii_digit() {
        return Some(c.to_string());
    }
    if c.is_ascii_uppercase() {
        return Some(format!("shift-{}", c.to_ascii_lowercase()));
    }
    if ('\x01'..='\x1a').contains(&c) {
        let letter = (b'a' + (c as u8 - 1)) as char;
        return Some(format!("ctrl-{letter}"));
    }
    if let Some(name) = symbol(c) {
        return Some(name.into());
    }
    shifted(c).map(|base| format!("shift-{base}"))
}

/// The key of an unshifted symbol.
fn symbol(c: char) -> Option<&'static str> {
    Some(match c {
        '-' => "minus",
        '=' => "equal",
        '[' => "bracket_left",
        ']' => "bracket_right",
        '\\' => "backslash",
        ';' => "semicolon",
        '\'' => "apostrophe",
        '`' => "grave_accent",
        ',' => "comma",
        '.' => "dot",
        '/' => "slash",
        _ => return None,
    })
}

/// The key a shifted symbol is on.
fn shifted(c: char) -> Option<&'static str> {
    Some(match c {
        '!' => "1",
        '@' => "2",
        '#' => "3",
        '$' => "4",
        '%' => "5",
        '^' => "6",
        '&' => "7",
        '*' => "8",
        '(' => "9",
        ')' => "0",
        '_' => "minus",
        '+' => "equal",
        '{' => "bracket_left",
        '}' => "bracket_right",
        '|' => "backslash",
        ':' => "semicolon",
        '"' => "apostrophe",
        '~' => "grave_accent",
        '<' => "comma",
        '>' => "dot",
        '?' => "slash",
        _ => return None,
    })
}

/// The combinations that type `text`, one per character, or the first
/// character that cannot be typed.
pub fn keys_for(text: &str) -> Result<Vec<String>, char> {
    text.chars().map(|c| key_for(c).ok_or(c)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_line() {
        assert_eq!(
            keys_for("ls -l /Tmp\r").unwrap(),
            [
                "l", "s", "spc", "minus", "l", "spc", "slash", "shift-t", "m", "p", "ret"
            ]
        );
    }

    #[test]
    fn symbols_and_control_keys() {
        assert_eq!(key_for('?').unwrap(), "shift-slash");
        assert_eq!(key_for('"').unwrap(), "shift-apostrophe");
        assert_eq!(key_for('=').unwrap(), "equal");
        assert_eq!(key_for('\x03').unwrap(), "ctrl-c");
        assert_eq!(key_for('\x1a').unwrap(), "ctrl-z");
        assert_eq!(key_for('\n').unwrap(), "ret");
        assert_eq!(key_for('\t').unwrap(), "tab");
        assert_eq!(key_for('\x7f').unwrap(), "backspace");
        assert_eq!(key_for('\x1b').unwrap(), "esc");
    }

    #[test]
    fn every_printable_ascii_character_has_a_key() {
        for c in ' '..='~' {
            let key = key_for(c).unwrap_or_else(|| panic!("no key for {c:?}"));
            assert!(!key.is_empty() && !key.contains(' '), "{c:?} -> {key:?}");
        }
    }

    #[test]
    fn what_a_us_keyboard_lacks_is_refused() {
        assert_eq!(keys_for("caf\u{e9}"), Err('\u{e9}'));
        assert_eq!(key_for('\0'), None);
    }
}
