// The source view: bring the cited sentence (or, without one, the cited passage) into view,
// and move keyboard focus to the sentence so the next Tab starts from there.
"use strict";
(function () {
  const sentence = document.getElementById("sentence");
  const target = sentence || document.getElementById("cited");
  if (!target) return;
  target.scrollIntoView({ block: "center" });
  if (sentence) sentence.focus({ preventScroll: true });
})();
