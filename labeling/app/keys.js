// Keyboard shortcuts for the annotator page (loaded once in <head>; keys act on visible controls only).
// 1-6 choose, Enter submits, S skips; in ranking projects letters build the ranking, Backspace undoes;
// Ctrl+Enter submits even from inside a text box.
(() => {
  const CHOICE_KEYS = { "1": 0, "2": 1, "3": 2, "4": 3, "5": 4, "6": 5 };
  const LABELS = "ABCDEFGHI";
  const visible = (el) => el && el.offsetParent !== null;
  // Keys typed into a text field or the ratings grid belong to it, not to the shortcuts.
  const typing = (el) => el && (el.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName) ||
                                el.closest?.("[role=grid]") !== null);
  const click = (id) => {
    const el = document.getElementById(id);
    if (visible(el) && !el.disabled) { el.click(); return true; }
    return false;
  };
  const setText = (box, value) => {
    box.value = value;
    box.dispatchEvent(new Event("input", { bubbles: true }));
  };

  function ranking(key) {
    const box = document.querySelector("#pl-ranking input, #pl-ranking textarea");
    if (!visible(box)) return false;
    const shown = LABELS.slice(0, document.querySelectorAll("#pl-responses .pl-card").length);
    if (key === "Backspace") { setText(box, box.value.slice(0, -1)); return true; }
    const label = key.toUpperCase();
    if (key.length !== 1 || !shown.includes(label)) return false;
    if (!box.value.toUpperCase().includes(label)) setText(box, box.value + label);
    return true;
  }

  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      if (click("pl-submit")) {
        e.preventDefault();
        e.target.blur?.();  // so the next digit chooses again instead of typing into the box
      }
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey || typing(e.target)) return;
    let handled = false;
    const choices = document.querySelectorAll("#pl-choice input[type=radio]");
    if (e.key in CHOICE_KEYS && choices.length && visible(choices[0])) {
      choices[CHOICE_KEYS[e.key]].click();
      handled = true;
    } else if (e.key === "Enter") {
      handled = click("pl-submit");
    } else if (e.key === "s" || e.key === "S") {
      handled = click("pl-skip");
    } else {
      handled = ranking(e.key);
    }
    if (handled) e.preventDefault();
  });
})();
