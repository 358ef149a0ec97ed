//! Turns pest's "expected one of these rules" into a sentence in the words
//! of the language: `expected \`then\`, found \`score\``. Rule names never
//! reach the user.

use super::parser::Rule;

/// What a rule looks like to a user, and whether it merely continues an
/// expression (operators are always possible after an operand; listing them
/// next to `then` would bury the one token that is actually missing).
fn describe(r: Rule) -> (&'static str, bool) {
    use Rule::*;
    match r {
        kw_track => ("`track`", false),
        kw_version => ("`version`", false),
        kw_source => ("`source`", false),
        kw_key => ("`key`", false),
        kw_from => ("`from`", false),
        kw_fields => ("`fields`", false),
        kw_on => ("`on`", false),
        kw_every => ("`every`", false),
        kw_cron => ("`cron`", false),
        kw_tz => ("`tz`", true),
        kw_at => ("`at`", false),
        kw_event => ("`event`", false),
        kw_change => ("`change`", false),
        kw_step => ("`step`", false),
        kw_wait => ("`wait`", false),
        kw_when => ("`when`", false),
        kw_then => ("`then`", false),
        kw_else => ("`else`", false),
        kw_goto => ("`goto`", false),
        kw_stay => ("`stay`", false),
        kw_end => ("`end`", false),
        kw_sql => ("`sql`", false),
        kw_email => ("`email`", false),
        kw_to => ("`to`", true),
        kw_webhook => ("`webhook`", false),
        kw_emit => ("`emit`", false),
        kw_and => ("`and`", true),
        kw_or => ("`or`", true),
        kw_not => ("`not`", true),
        kw_in => ("`in`", true),
        kw_between => ("`between`", true),
        kw_is => ("`is`", true),
        kw_null => ("`null`", false),
        kw_like => ("`like`", true),
        kw_true | kw_false => ("an expression", false),
        lbrace => ("`{`", false),
        rbrace => ("`}`", false),
        lparen => ("`(`", false),
        rparen => ("`)`", false),
        comma => ("`,`", false),
        colon => ("`:`", false),
        question => ("`?`", true),
        ident => ("a name", false),
        int => ("an integer", false),
        float => ("a number", false),
        string => ("a string like `'text'`", false),
        duration => ("a duration like `15m`", false),
        timestamp => ("a timestamp like `2026-12-01T09:00:00Z`", false),
        type_name => (
            "a type (`int`, `float`, `bool`, `text`, `timestamp`)",
            false,
        ),
        sql_block | sql_text | sql_end => ("a SQL block `{ … }`", false),
        track | track_head => ("`track`", false),
        track_item => ("`source`, `fields`, `on`, `step` or `}`", false),
        source => ("`source`", false),
        fields => ("`fields`", false),
        field => ("a field like `score: int`", false),
        trigger => ("`on`", false),
        every | cron | at | on_event | change => (
            "a trigger (`every`, `cron`, `at`, `event` or `change`)",
            false,
        ),
        step => ("`step`", false),
        wait => ("`wait`", false),
        rule | when_rule | else_rule => ("`when`, `else` or `}`", false),
        actions | action | goto | stay | end | sql_action | email | webhook | emit => (
            "an action (`goto`, `stay`, `end`, `sql`, `email`, `webhook`, `emit`)",
            false,
        ),
        cmp_op | add_op | mul_op | cmp_binary | in_list | between | is_null | like => {
            ("an operator", true)
        }
        neg | expr | or_expr | and_expr | not_expr | cmp | sum | product | unary | call
        | field_ref | paren => ("an expression", false),
        kw_test | test | test_head => ("`test`", false),
        kw_now => ("`now`", false),
        kw_record => ("`record`", false),
        kw_expect => ("`expect`", false),
        kw_rule => ("`rule`", false),
        kw_no => ("`no`", false),
        kw_effects => ("`effects`", false),
        test_item | test_target | test_now | test_record | expect => {
            ("`track`, `now`, `record`, `expect` or `}`", false)
        }
        field_value => ("a field like `score: 72`", false),
        literal => (
            "a value (a number, a string, a timestamp, `true`, `false` or `null`)",
            false,
        ),
        expect_rule | expect_no | expect_effects => (
            "an expectation (`rule`, `no`, `effects`, `goto`, `stay`, `end`)",
            false,
        ),
        expected_effect | expected_email => {
            ("an effect (`email`, `webhook`, `emit`, `sql`)", false)
        }
        EOI => ("end of file", false),
        _ => ("more input", false),
    }
}

/// "expected A", "expected A or B", "expected A, B or C".
pub fn expected_sentence(rules: &[Rule]) -> String {
    let described: Vec<(&str, bool)> = rules.iter().map(|r| describe(*r)).collect();
    let any_structural = described.iter().any(|(_, continuation)| !continuation);
    let mut words: Vec<&str> = Vec::new();
    for (text, continuation) in described {
        if (!continuation || !any_structural) && !words.contains(&text) {
            words.push(text);
        }
    }
    match words.as_slice() {
        [] => "unexpected input".to_string(),
        [one] => format!("expected {one}"),
        [init @ .., last] => format!("expected {} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_do_not_bury_the_missing_keyword() {
        let rules = [Rule::kw_then, Rule::kw_and, Rule::cmp_op, Rule::add_op];
        assert_eq!(expected_sentence(&rules), "expected `then`");
        assert_eq!(
            expected_sentence(&[Rule::kw_and, Rule::kw_or]),
            "expected `and` or `or`"
        );
        assert_eq!(
            expected_sentence(&[Rule::comma, Rule::rparen, Rule::ident]),
            "expected `,`, `)` or a name"
        );
    }
}
