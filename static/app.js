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

// Elements with data-autorefresh="N" reload the page every N seconds (while jobs are live), except
// while rows are checked for a bulk action: a reload would lose the selection, so it waits.
const refresh = document.querySelector("[data-autorefresh]");
if (refresh) {
  const seconds = Number(refresh.dataset.autorefresh) || 5;
  const reloadUnlessSelecting = () => {
    if (document.querySelector("input[type=checkbox][name=id]:checked")) {
      window.setTimeout(reloadUnlessSelecting, seconds * 1000);
    } else {
      window.location.reload();
    }
  };
  window.setTimeout(reloadUnlessSelecting, seconds * 1000);
}

// An element with data-live-url keeps the page's parts marked data-live-part up to date without a
// reload (the Jobs page): every data-live-seconds it fetches that address, an HTML fragment whose
// elements carry the same ids, and swaps each part's content in. The address holds the page's
// filters; checked boxes stay checked, the scroll stays where it is, and nothing is fetched while
// the tab is hidden. Without script the page's Refresh link does the same by hand.
const liveSource = document.querySelector("[data-live-url]");
if (liveSource) {
  const seconds = Number(liveSource.dataset.liveSeconds) || 5;
  const note = document.getElementById("live-note");
  let timer = 0;
  let busy = false;
  const swap = (html) => {
    const fresh = new DOMParser().parseFromString(html, "text/html");
    const checked = new Set(
      Array.from(document.querySelectorAll("input[type=checkbox][name=id]:checked"), (box) => box.value),
    );
    const focused = document.activeElement && document.activeElement.id;
    document.querySelectorAll("[data-live-part]").forEach((part) => {
      const next = fresh.getElementById(part.id);
      if (next) {
        part.innerHTML = next.innerHTML;
      }
    });
    document.querySelectorAll("input[type=checkbox][name=id]").forEach((box) => {
      box.checked = checked.has(box.value);
    });
    const again = focused && document.getElementById(focused);
    if (again && again !== document.activeElement) {
      again.focus({ preventScroll: true });
    }
    if (note) {
      note.textContent = "(updated " + new Date().toLocaleTimeString() + ")";
    }
  };
  const schedule = () => {
    window.clearTimeout(timer);
    if (!document.hidden) {
      timer = window.setTimeout(poll, seconds * 1000);
    }
  };
  const poll = () => {
    if (busy || document.hidden) {
      return;
    }
    busy = true;
    fetch(liveSource.dataset.liveUrl, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then((res) => (res.ok && !res.redirected ? res.text() : Promise.reject(new Error("HTTP " + res.status))))
      .then(swap)
      // The server may be busy or restarting (or the session over): keep the page as it is.
      .catch(() => {})
      .finally(() => {
        busy = false;
        schedule();
      });
  };
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) {
      window.clearTimeout(timer);
    } else {
      poll();
    }
  });
  schedule();
}

// Buttons with data-open-dialog="ID" open that <dialog>; buttons with data-close-dialog close theirs.
document.addEventListener("click", (event) => {
  const opener = event.target.closest("[data-open-dialog]");
  if (opener) {
    const dialog = document.getElementById(opener.dataset.openDialog);
    if (dialog && !dialog.open) {
      dialog.showModal();
    }
  }
  const closer = event.target.closest("[data-close-dialog]");
  if (closer && closer.closest("dialog")) {
    closer.closest("dialog").close();
  }
});

// A form's sections with data-show-when="field=value" are shown (and sent) only while that field
// has that value: the import dialog's mode switch and provider choice.
function applyShowWhen(form) {
  form.querySelectorAll("[data-show-when]").forEach((section) => {
    const [name, value] = section.dataset.showWhen.split("=");
    const field = form.elements.namedItem(name);
    const shown = Boolean(field) && field.value === value;
    section.hidden = !shown;
    section.disabled = !shown;
  });
}
document.querySelectorAll("form").forEach((form) => {
  if (form.querySelector("[data-show-when]")) {
    applyShowWhen(form);
  }
});
document.addEventListener("change", (event) => {
  if (event.target.form) {
    applyShowWhen(event.target.form);
  }
});

// Elements with data-follow-job="ID" follow that job until it ends: they poll its JSON and show
// its status, and in the end its error, if any, in the element named by data-job-error.
const FINAL_JOB_STATUSES = ["succeeded", "failed", "cancelled"];
function jobUrl(id) {
  return "/api/admin/jobs/" + encodeURIComponent(id);
}
function followJob(badge) {
  const show = (job) => {
    badge.textContent = job.status;
    badge.className = "badge " + job.status;
    if (!FINAL_JOB_STATUSES.includes(job.status)) {
      window.setTimeout(poll, 1000);
      return;
    }
    badge.dataset.jobFinished = "true";
    const errorBox = document.getElementById(badge.dataset.jobError || "");
    if (errorBox && job.last_error) {
      errorBox.textContent = job.last_error;
      errorBox.hidden = false;
    }
  };
  const poll = () => {
    fetch(jobUrl(badge.dataset.followJob), { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then((res) => (res.ok ? res.json() : Promise.reject(new Error("HTTP " + res.status))))
      .then(show)
      // The server may be busy or restarting: try again a little later.
      .catch(() => window.setTimeout(poll, 3000));
  };
  poll();
}
document.querySelectorAll("[data-follow-job]").forEach(followJob);

// File inputs with data-read-into="ID" put the chosen file's text into that textarea, so an import
// form can post a file as ordinary form data (the Accounts page's import).
document.addEventListener("change", (event) => {
  const input = event.target;
  if (!input.dataset || !input.dataset.readInto || !input.files || input.files.length === 0) {
    return;
  }
  const target = document.getElementById(input.dataset.readInto);
  if (target) {
    input.files[0].text().then((text) => {
      target.value = text;
    });
  }
});

// The page has script: the narrow-screen navigation collapses behind the menu button (without
// script it stays open, so every page remains reachable).
document.documentElement.classList.add("js");
const menuButton = document.getElementById("menu-button");
if (menuButton) {
  menuButton.addEventListener("click", () => {
    const open = menuButton.getAttribute("aria-expanded") !== "true";
    menuButton.setAttribute("aria-expanded", String(open));
    document.body.classList.toggle("menu-open", open);
  });
}

// A dialog the server sent open (a refused form inside it) becomes modal, with its backdrop and
// focus, instead of sitting in the page flow.
document.querySelectorAll("dialog[open]").forEach((dialog) => {
  dialog.close();
  dialog.showModal();
});

// Forms with data-preview-url show, while their templates are typed, the names the server's
// naming rules give them (a group's settings form): the answer fills the elements with
// data-preview="field" inside the element named by data-preview-target.
document.querySelectorAll("form[data-preview-url]").forEach((form) => {
  const target = document.getElementById(form.dataset.previewTarget || "");
  if (!target) {
    return;
  }
  const errorBox = target.querySelector("#preview-error");
  const fields = ["team_template", "child_name_template", "child_email_template", "email_domain"];
  let timer = 0;
  let asked = 0;
  const fill = (name, values) => {
    const box = target.querySelector('[data-preview="' + name + '"]');
    if (!box) {
      return;
    }
    if (typeof values === "string") {
      box.textContent = values;
      return;
    }
    box.replaceChildren(...values.map((v) => {
      const line = document.createElement("div");
      line.textContent = v;
      return line;
    }));
  };
  const ask = () => {
    const query = new URLSearchParams();
    fields.forEach((f) => {
      const input = form.elements.namedItem(f);
      if (input) {
        query.set(f, input.value);
      }
    });
    const mine = ++asked;
    fetch(form.dataset.previewUrl + "?" + query.toString(), { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then((res) => res.json().then((body) => ({ ok: res.ok, body })))
      .then(({ ok, body }) => {
        if (mine !== asked) {
          return; // an older answer arriving after a newer one
        }
        if (!ok) {
          errorBox.textContent = (body.error && body.error.message) || "preview failed";
          errorBox.hidden = false;
          return;
        }
        errorBox.hidden = true;
        fill("date", body.date);
        fill("team_names", body.team_names);
        fill("child_names", body.child_names);
        fill("child_emails", body.child_emails);
      })
      .catch(() => {});
  };
  form.addEventListener("input", (event) => {
    if (fields.includes(event.target.name)) {
      window.clearTimeout(timer);
      timer = window.setTimeout(ask, 250);
    }
  });
});
