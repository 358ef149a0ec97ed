//! The VS Code package in editors/vscode/ stays in step with the language:
//! its JSON files parse, the grammar names every keyword of
//! grammar/tracks.pest and every function, and the package starts
//! `trackc lsp` for `.dt` files.

use std::path::Path;

fn read_json(path: &str) -> serde_json::Value {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let text = std::fs::read_to_string(&full).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_vscode_grammar_knows_every_keyword_and_function() {
    let grammar = read_json("editors/vscode/syntaxes/trackc.tmLanguage.json");
    let text = grammar.to_string();
    let pest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("grammar/tracks.pest"))
            .unwrap();
    let keywords: Vec<&str> = pest
        .lines()
        .filter_map(|l| l.strip_prefix("kw_"))
        .filter_map(|l| l.split('"').nth(1))
        .collect();
    assert!(keywords.len() > 30, "{keywords:?}");
    for word in keywords {
        assert!(
            text.contains(&format!("|{word}|"))
                || text.contains(&format!("({word}|"))
                || text.contains(&format!("|{word})")),
            "`{word}` is not highlighted"
        );
    }
    for function in ["now", "lower", "upper", "length", "abs", "coalesce"] {
        assert!(text.contains(function), "{function}");
    }
    assert_eq!(grammar["scopeName"], "source.trackc");
}

#[test]
fn the_vscode_package_starts_the_language_server_for_dt_files() {
    let package = read_json("editors/vscode/package.json");
    assert_eq!(
        package["contributes"]["languages"][0]["extensions"][0],
        ".dt"
    );
    assert_eq!(
        package["contributes"]["grammars"][0]["embeddedLanguages"]["meta.embedded.block.sql"],
        "sql"
    );
    read_json("editors/vscode/language-configuration.json");
    let extension = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(
            package["main"]
                .as_str()
                .unwrap()
                .replace("./", "editors/vscode/"),
        ),
    )
    .unwrap();
    assert!(extension.contains("args: [\"lsp\"]"));
}
