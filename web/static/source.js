// The source view: bring the cited passage into view.
"use strict";
(function () {
  const mark = document.getElementById("cited");
  if (mark) mark.scrollIntoView({ block: "center" });
})();
