// Review screen: keyboard-first decisions, each answered by the next item's partial (htmx swaps #review-item).
// Grid mode: ticking, shift-click ranges and the selection count.
(function () {
  "use strict";

  const box = document.getElementById("review-item");
  if (box) reviewScreen(box);
  const grid = document.getElementById("review-grid");
  if (grid) gridMode(grid);

  function reviewScreen(box) {
    const alertBox = document.getElementById("review-alert");
    const urls = box.dataset;
    const KEYS = /^([1-9]|[gGnNhH+=\-]|Enter| |Backspace|ArrowLeft|ArrowRight)$/;
    let busy = false;
    const waiting = []; // keys pressed while a request was in flight, replayed in order once it is answered
    let pending = null; // {verdict, type, label}: chosen, not yet confirmed
    let heatShown = true;
    let zoom = 1;

    const item = () => box.querySelector(".review-item");
    const itemId = () => (item() && item().dataset.item) || "";

    function say(text, kind) {
      alertBox.textContent = text;
      alertBox.className = "review-alert" + (text ? " " + (kind || "error") : "");
    }

    function send(url, values) {
      busy = true;
      say("");
      const form = box.querySelector("#decide-form");
      const done = () => {
        busy = false;
        drain();
      };
      htmx.ajax("POST", url, { source: form, target: box, swap: "innerHTML", values: values }).then(done, done);
    }

    // A key pressed while the previous answer was in flight belongs to the image the reviewer was looking at.
    // Decision keys for an image that has since been replaced are dropped, never applied to an image the
    // reviewer has not seen (a double Enter must not confirm the next image's suggestion unseen).
    const VIEW_KEYS = /^[hH+=\-]$/;
    function drain() {
      let dropped = 0;
      while (!busy && waiting.length) {
        const w = waiting.shift();
        if (w.item !== itemId() && !VIEW_KEYS.test(w.key)) dropped += 1;
        else handle(w.key);
      }
      if (dropped) say("Ignored " + dropped + " key(s) pressed before this image appeared.", "hint");
    }

    function setPending(choice) {
      pending = choice;
      box.querySelectorAll("[data-choice]").forEach((el) => {
        const on = choice && (choice.verdict === "good" ? el.dataset.choice === "good" : el.dataset.type === choice.type);
        el.classList.toggle("pending", Boolean(on));
      });
      const shown = box.querySelector("#pending-choice");
      if (shown && choice) shown.textContent = "your choice: " + choice.label;
    }

    function suggestion() {
      const d = item().dataset;
      if (d.suggestVerdict === "defective" && d.suggestType) return { verdict: "defective", type: d.suggestType };
      if (d.suggestVerdict === "good") return { verdict: "good", type: "" };
      return null;
    }

    function applyView() {
      const heat = box.querySelector("#review-heat");
      const slider = box.querySelector("#review-opacity");
      if (heat && slider) heat.style.opacity = heatShown ? slider.value / 100 : 0;
      const wrap = box.querySelector("#review-zoom");
      if (wrap) wrap.style.transform = "scale(" + zoom + ")";
    }

    function zoomBy(factor) {
      zoom = Math.min(8, Math.max(1, zoom * factor));
      applyView();
    }

    function handle(key) {
      const here = item();
      if (/^[1-9]$/.test(key)) {
        const el = box.querySelector('[data-choice="type"][data-key="' + key + '"]');
        if (!el) return say("No defect type on key " + key + ".", "hint");
        return setPending({ verdict: "defective", type: el.dataset.type, label: "defective, " + el.dataset.name });
      }
      switch (key) {
        case "g":
        case "G":
          return setPending({ verdict: "good", type: "", label: "good part (false alarm)" });
        case "n":
        case "N": {
          const name = window.prompt("Name of the new defect type");
          if (name && name.trim()) send(urls.typeUrl, { name: name.trim() });
          return;
        }
        case "Enter":
        case " ": {
          if (!here.dataset.item) return say("Nothing to confirm: the queue is empty.", "hint");
          const choice = pending || suggestion();
          if (!choice) return say("Nothing to confirm: choose a type (1-9), G for a good part or N for a new type.", "hint");
          return send(urls.decideUrl, { decision: choice.verdict, defect_type: choice.type || "" });
        }
        case "Backspace":
          return send(urls.undoUrl, {});
        case "ArrowLeft":
        case "ArrowRight":
          if (!itemId()) return;
          return send(urls.moveUrl, { direction: key === "ArrowLeft" ? "prev" : "next" });
        case "h":
        case "H":
          heatShown = !heatShown;
          return applyView();
        case "+":
        case "=":
          return zoomBy(1.25);
        case "-":
          return zoomBy(1 / 1.25);
      }
    }

    document.addEventListener("keydown", (e) => {
      if (e.ctrlKey || e.metaKey || e.altKey || e.isComposing) return;
      if (e.target.closest && e.target.closest("input, textarea, select, [contenteditable]")) return;
      if (!KEYS.test(e.key)) return;
      e.preventDefault(); // Space scrolls, Backspace may navigate, Enter would press a focused button
      if (document.activeElement && document.activeElement.matches("button, a")) document.activeElement.blur();
      if (busy) waiting.push({ key: e.key, item: itemId() });
      else handle(e.key);
    });

    // The same actions for the mouse: legend rows and the small buttons name the key they stand for.
    box.addEventListener("click", (e) => {
      const row = e.target.closest("[data-choice]");
      const button = e.target.closest("[data-key-action]");
      if (button) handle(button.dataset.keyAction);
      else if (row && row.dataset.choice === "good") handle("g");
      else if (row && row.dataset.key) handle(row.dataset.key);
    });
    box.addEventListener("input", (e) => {
      if (e.target.id === "review-opacity") {
        heatShown = true;
        applyView();
      }
    });
    box.addEventListener(
      "wheel",
      (e) => {
        if (!e.target.closest(".zoom-clip")) return;
        e.preventDefault();
        zoomBy(e.deltaY < 0 ? 1.1 : 1 / 1.1);
      },
      { passive: false },
    );

    // Refusals (stale decision 409, bad input 400) keep the item on screen and say why.
    box.addEventListener("htmx:beforeSwap", (e) => {
      if (e.detail.xhr.status >= 400) {
        e.detail.shouldSwap = false;
        say(e.detail.xhr.responseText || "The server refused (" + e.detail.xhr.status + ").");
      }
    });
    document.body.addEventListener("htmx:sendError", () => say("The server could not be reached: try again."));

    function afterSwap() {
      pending = null;
      applyView();
      const here = item();
      if (!here) return;
      if (here.dataset.pendingType) {
        const el = box.querySelector('[data-choice="type"][data-type="' + here.dataset.pendingType + '"]');
        if (el) setPending({ verdict: "defective", type: el.dataset.type, label: "defective, " + el.dataset.name });
      }
      (here.dataset.preload || "").split(" ").forEach((src) => {
        if (src) new Image().src = src; // the next image is in the cache when its turn comes
      });
    }
    box.addEventListener("htmx:afterSwap", afterSwap);
    afterSwap();
  }

  function gridMode(form) {
    const boxes = () => Array.from(form.querySelectorAll('input[name="items"]'));
    const count = document.getElementById("selected-count");
    const all = document.getElementById("select-page");
    let last = null;

    function refresh() {
      const n = boxes().filter((b) => b.checked).length;
      count.textContent = n + " selected";
      form.querySelectorAll(".review-card").forEach((card) => {
        card.classList.toggle("selected", card.querySelector('input[name="items"]').checked);
      });
    }

    function clicked(box, shift) {
      const list = boxes();
      const at = list.indexOf(box);
      if (shift && last !== null && last !== at) {
        const [from, to] = last < at ? [last, at] : [at, last];
        for (let k = from; k <= to; k++) list[k].checked = box.checked;
      }
      last = at;
      refresh();
    }

    form.addEventListener("click", (e) => {
      if (e.target.matches('input[name="items"]')) {
        clicked(e.target, e.shiftKey);
      } else if (e.target.matches(".review-card img")) {
        const box = e.target.closest(".review-card").querySelector('input[name="items"]');
        box.checked = !box.checked;
        clicked(box, e.shiftKey);
      }
    });
    if (all) {
      all.addEventListener("change", () => {
        boxes().forEach((b) => {
          b.checked = all.checked;
        });
        refresh();
      });
    }
    refresh();
  }
})();
