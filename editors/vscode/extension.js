// Starts `trackc lsp` (the binary of the `trackc.path` setting) for .dt
// files; everything else is the language server's.
const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const command = vscode.workspace.getConfiguration("trackc").get("path", "trackc");
  client = new LanguageClient(
    "trackc",
    "trackc",
    { command, args: ["lsp"] },
    { documentSelector: [{ scheme: "file", language: "trackc" }] }
  );
  context.subscriptions.push(client);
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
