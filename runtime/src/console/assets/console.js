// The console's little script: the group page refreshes its nodes and
// tracks once a cycle without a reload, and the plan page reads a chosen
// file into its text box. Nothing else; every page works without it.
"use strict";

function refreshGroup() {
  const cycle = Number(document.body.dataset.cycleMs) || 1000;
  const tick = async () => {
    try {
      const answer = await fetch("/console/status", { credentials: "same-origin" });
      if (answer.ok) {
        const status = await answer.json();
        for (const n of status.nodes || []) {
          const row = document.querySelector(`#nodes tr[data-node="${n.id}"]`);
          if (!row) continue;
          row.className = `state-${n.state}`;
          row.querySelector(".state").textContent = n.state;
          row.querySelector(".master").textContent = n.master ? "master" : "";
          row.querySelector(".db").textContent = n.database ? "ok" : "unreachable";
          row.querySelector(".free").textContent = n.free;
          row.querySelector(".in-flight").textContent = n.blocks_in_flight;
          row.querySelector(".load").textContent = n.load ?? "";
          row.querySelector(".tracks").textContent = (n.tracks || []).join(", ");
        }
        for (const t of status.tracks || []) {
          const row = document.querySelector(`#tracks tr[data-track="${CSS.escape(t.name)}"]`);
          if (row) row.querySelector(".owner").textContent = t.owner ?? "";
        }
        const db = document.getElementById("database");
        if (db && status.database) {
          const up = status.database.reachable === true;
          db.className = `database ${up ? "ok" : "bad"}`;
          db.textContent = `database: ${up ? "reachable" : "unreachable"}`;
        }
      }
    } catch (e) {
      // The node is unreachable for now: the next tick tries again.
    }
    setTimeout(tick, cycle);
  };
  setTimeout(tick, cycle);
}

function readPlanFile() {
  const input = document.getElementById("plan-file");
  if (!input) return;
  input.addEventListener("change", async () => {
    const file = input.files[0];
    if (!file) return;
    const form = document.getElementById("plan-form");
    form.querySelector("textarea[name=text]").value = await file.text();
    form.querySelector("input[name=name]").value = file.name;
  });
}

if (document.body.dataset.page === "group") refreshGroup();
readPlanFile();
