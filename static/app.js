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
