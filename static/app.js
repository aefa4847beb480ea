// The little behaviour poolkeeper's pages need, written here; no libraries.
"use strict";

// Forms and buttons with data-confirm ask before they act (destructive actions).
document.addEventListener("submit", (event) => {
  const form = event.target;
  const message = form.dataset.confirm || (event.submitter && event.submitter.dataset.confirm);
  if (message && !window.confirm(message)) {
    event.preventDefault();
  }
});

// Elements with data-autorefresh="N" reload the page every N seconds (while jobs are live).
const refresh = document.querySelector("[data-autorefresh]");
if (refresh) {
  const seconds = Number(refresh.dataset.autorefresh) || 5;
  window.setTimeout(() => window.location.reload(), seconds * 1000);
}
