// dynreg console: the little that needs a script. Everything works without it.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // A file of device names fills the textarea it names.
  for (const input of document.querySelectorAll("input[type=file][data-fills]")) {
    input.addEventListener("change", () => {
      const file = input.files && input.files[0];
      const target = document.getElementById(input.dataset.fills);
      if (!file || !target) return;
      file.text().then((text) => { target.value = text; });
    });
  }
});
