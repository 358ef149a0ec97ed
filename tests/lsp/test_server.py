"""`trackc lsp` driven by pytest-lsp, a client the project did not write.

The server is the binary named by TRACKC_BIN (tests/lsp.rs sets it); the
project is tests/lsp/project (a trackc.toml with its schema, two track
files that share the event `qualified`).
"""

import asyncio
import os
import pathlib

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

PROJECT = pathlib.Path(__file__).parent / "project"
SCORING = PROJECT / "tracks" / "scoring.dt"
HANDOFF = PROJECT / "tracks" / "handoff.dt"


@pytest_lsp.fixture(
    config=ClientServerConfig(server_command=[os.environ["TRACKC_BIN"], "lsp"]),
)
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(
        types.InitializeParams(
            capabilities=client_capabilities("visual-studio-code"),
            root_uri=PROJECT.as_uri(),
        )
    )
    yield
    await lsp_client.shutdown_session()


def open_doc(client: LanguageClient, path: pathlib.Path, text: str | None = None) -> str:
    uri = path.as_uri()
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(
                uri=uri, language_id="trackc", version=1,
                text=path.read_text() if text is None else text,
            )
        )
    )
    return uri


def change(client: LanguageClient, uri: str, version: int, text: str) -> None:
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)],
        )
    )


def position_of(text: str, needle: str, offset: int = 0) -> types.Position:
    """The LSP position (UTF-16 units) of `needle` in `text`, plus `offset`."""
    at = text.index(needle) + offset
    line = text.count("\n", 0, at)
    start = text.rfind("\n", 0, at) + 1
    return types.Position(line=line, character=len(text[start:at].encode("utf-16-le")) // 2)


# No wait may hang CI: each is bounded.
TIMEOUT = 10


async def diagnostics_for(client: LanguageClient, uri: str):
    """The next diagnostics published (the only ones awaited at a time)."""
    await asyncio.wait_for(
        client.wait_for_notification(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS), TIMEOUT
    )
    return client.diagnostics[uri]


async def test_diagnostics_appear_and_clear(client: LanguageClient):
    text = SCORING.read_text()
    uri = open_doc(client, SCORING, text.replace("goto done", "goto dne"))
    found = await diagnostics_for(client, uri)
    assert [d.code for d in found] == ["E003"]
    assert "did you mean `done`?" in found[0].message
    change(client, uri, 2, text)
    assert list(await diagnostics_for(client, uri)) == []


async def test_a_test_file_is_checked_against_its_tracks(client: LanguageClient):
    """`*.dt.test` files get the diagnostics of `trackc test`, not a track's."""
    path = PROJECT / "tracks" / "scoring.dt.test"
    good = (
        "test 'a high score qualifies' {\n"
        "    track scoring step check\n"
        "    record { id: 1, email: 'a@example.com', score: 80 }\n"
        "    expect effects emit qualified\n"
        "    expect goto done\n"
        "}\n"
    )
    uri = open_doc(client, path, good.replace("step check", "step chek"))
    found = await diagnostics_for(client, uri)
    assert [d.code for d in found] == ["E016"]
    assert "did you mean `check`?" in found[0].message
    assert found[0].range.start == position_of(good, "check")
    change(client, uri, 2, good)
    assert list(await diagnostics_for(client, uri)) == []
    # Requests about tracks answer nothing on a test file.
    hover = await client.text_document_hover_async(
        types.HoverParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=position_of(good, "score: 80"),
        )
    )
    assert hover is None


async def test_utf16_positions_on_a_line_with_emoji(client: LanguageClient):
    text = SCORING.read_text().replace(
        "when score >= 80", "when note = '🎉🎉' and scor >= 80"
    )
    uri = open_doc(client, SCORING, text)
    (found,) = await diagnostics_for(client, uri)
    assert found.code == "E004"
    assert found.range.start == position_of(text, "scor >=")
    # Each emoji is two UTF-16 units: the column is past them by 4, not 2.
    line = text.splitlines()[found.range.start.line]
    assert found.range.start.character == len(line[: line.index("scor >=")]) + 2


async def test_hover_shows_a_fields_type(client: LanguageClient):
    text = SCORING.read_text()
    uri = open_doc(client, SCORING)
    await diagnostics_for(client, uri)
    hover = await client.text_document_hover_async(
        types.HoverParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=position_of(text, "score >= 80", 1),
        )
    )
    assert hover.contents.value.startswith("`score`: int")


async def test_definition_across_files(client: LanguageClient):
    text = SCORING.read_text()
    uri = open_doc(client, SCORING)
    await diagnostics_for(client, uri)
    found = await client.text_document_definition_async(
        types.DefinitionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=position_of(text, "emit qualified", 6),
        )
    )
    assert [loc.uri for loc in found] == [HANDOFF.as_uri()]
    handoff = HANDOFF.read_text()
    assert found[0].range.start == position_of(handoff, "qualified")


async def test_templates_are_found_and_offered(client: LanguageClient):
    text = HANDOFF.read_text()
    uri = open_doc(client, HANDOFF)
    await diagnostics_for(client, uri)
    found = await client.text_document_definition_async(
        types.DefinitionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=position_of(text, "'sales-call'", 3),
        )
    )
    assert found.uri == (PROJECT / "templates" / "sales-call.txt").as_uri()
    # After the action keyword `email`: the files of templates/, quoted.
    typed = text.replace("email 'sales-call'", "email ")
    change(client, uri, 2, typed)
    await diagnostics_for(client, uri)
    items = await client.text_document_completion_async(
        types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=position_of(typed, "email ", 6),
        )
    )
    assert [i.label for i in items] == ["'sales-call'", "'welcome'"]
    # The field `email` in `to email` is not an action: no templates there.
    items = await client.text_document_completion_async(
        types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=position_of(typed, "to email", 8),
        )
    )
    assert all(i.kind != types.CompletionItemKind.File for i in items)


async def test_completion_after_goto_and_in_a_condition(client: LanguageClient):
    text = SCORING.read_text().replace("goto done", "goto ")
    uri = open_doc(client, SCORING, text)
    await diagnostics_for(client, uri)
    items = await client.text_document_completion_async(
        types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=position_of(text, "goto ", 5),
        )
    )
    assert [i.label for i in items] == ["check", "done"]
    items = await client.text_document_completion_async(
        types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=position_of(text, "score >= 80"),
        )
    )
    fields = {i.label: i.detail for i in items if i.kind == types.CompletionItemKind.Field}
    assert fields == {"id": "int", "email": "text", "score": "int", "note": "text?"}


async def test_rename_a_step(client: LanguageClient):
    text = SCORING.read_text()
    uri = open_doc(client, SCORING)
    await diagnostics_for(client, uri)
    edit = await client.text_document_rename_async(
        types.RenameParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=position_of(text, "goto done", 6),
            new_name="finished",
        )
    )
    edits = edit.changes[uri]
    assert sorted(e.range.start.line for e in edits) == [
        position_of(text, "goto done").line,
        position_of(text, "step done").line,
    ]
    assert {e.new_text for e in edits} == {"finished"}


async def test_formatting(client: LanguageClient):
    messy = "track t { source key id { SELECT id, score FROM contacts }\nstep s { when score>1 then end } }"
    uri = open_doc(client, PROJECT / "tracks" / "messy.dt", messy)
    await diagnostics_for(client, uri)
    edits = await client.text_document_formatting_async(
        types.DocumentFormattingParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            options=types.FormattingOptions(tab_size=4, insert_spaces=True),
        )
    )
    assert edits[0].new_text == (
        "track t {\n    source key id { SELECT id, score FROM contacts }\n"
        "    step s {\n        when score > 1 then end\n    }\n}\n"
    )


async def test_a_code_action_applies_did_you_mean(client: LanguageClient):
    text = SCORING.read_text().replace("score >= 80", "scor >= 80")
    uri = open_doc(client, SCORING, text)
    (found,) = await diagnostics_for(client, uri)
    actions = await client.text_document_code_action_async(
        types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            range=found.range,
            context=types.CodeActionContext(diagnostics=[found]),
        )
    )
    (action,) = actions
    assert action.title == "replace with `score`"
    (edit,) = action.edit.changes[uri]
    lines = text.splitlines()
    line = lines[edit.range.start.line]
    fixed = line[: edit.range.start.character] + edit.new_text + line[edit.range.end.character :]
    assert "when score >= 80" in fixed


async def test_a_burst_of_changes_ends_with_the_right_diagnostics(client: LanguageClient):
    text = SCORING.read_text()
    uri = open_doc(client, SCORING)
    await diagnostics_for(client, uri)
    # 200 keystrokes typing and deleting, every other state broken; the
    # last one leaves an unknown step.
    for version in range(2, 202):
        broken = version % 2 == 0
        change(client, uri, version, text.replace("goto done", "goto don") if broken else text)
    change(client, uri, 202, text.replace("goto done", "goto nowhere"))
    # Notifications that arrive together resolve one waiter, so poll what
    # the client holds until the last state shows, then make sure nothing
    # older comes after it.
    def last_state():
        found = client.diagnostics.get(uri, [])
        return len(found) == 1 and "nowhere" in found[0].message

    async def until_last():
        while not last_state():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(until_last(), TIMEOUT)
    await asyncio.sleep(0.3)
    assert last_state()
    assert client.diagnostics[uri][0].code == "E003"
