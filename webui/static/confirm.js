// A form that cannot be undone asks first: its data-confirm attribute holds the question.
"use strict";
document.addEventListener("submit", (e) => {
  const question = e.target.dataset ? e.target.dataset.confirm : "";
  if (question && !window.confirm(question)) e.preventDefault();
});
