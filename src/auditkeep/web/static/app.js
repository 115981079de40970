// auditkeep console: a little progressive enhancement. Every page works without it.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Copy buttons: <button data-copy="element-id">.
  for (const button of document.querySelectorAll("[data-copy]")) {
    button.addEventListener("click", async () => {
      const target = document.getElementById(button.dataset.copy);
      if (!target) return;
      const text = "value" in target ? target.value : target.textContent;
      let copied = false;
      try {
        await navigator.clipboard.writeText(text);
        copied = true;
      } catch {
        if ("select" in target) {
          target.select();
          copied = document.execCommand("copy");
        }
      }
      const label = button.textContent;
      button.textContent = copied ? "Copied" : "Press Ctrl+C";
      setTimeout(() => { button.textContent = label; }, 1800);
    });
  }

  // Stacked tables (phones, app.css) label each cell with its column's heading; a cell may set its own.
  for (const table of document.querySelectorAll("table.table-stack")) {
    const headings = [...table.querySelectorAll("thead th")].map((th) => th.textContent.trim());
    for (const row of table.querySelectorAll("tbody tr")) {
      [...row.cells].forEach((cell, i) => {
        if (!cell.hasAttribute("data-label") && headings[i]) cell.dataset.label = headings[i];
      });
    }
  }

  // Table rows open their event (the time cell holds the real link for keyboards and no-JS).
  for (const row of document.querySelectorAll("tr[data-href]")) {
    row.addEventListener("click", (event) => {
      if (event.target.closest("a, button, input, select")) return;
      if (window.getSelection().toString()) return; // selecting text, not opening
      window.location.assign(row.dataset.href);
    });
  }

  // Choosing a preset range applies it at once; "Custom range" waits for the dates.
  const filters = document.getElementById("filters");
  if (filters) {
    for (const radio of filters.querySelectorAll('input[name="range"]')) {
      radio.addEventListener("change", () => {
        if (radio.value !== "custom") filters.requestSubmit();
      });
    }
  }

  // Select the new key on focus so it is easy to copy by hand too.
  const newKey = document.getElementById("new-key");
  if (newKey) newKey.addEventListener("focus", () => newKey.select());
});
