// Runs first: records script errors, console errors and any resource the page fetched (there should be
// none: the page is self-contained) into attributes of <html>, where a test or a curious reader finds them.
"use strict";
(function () {
  const errors = [];
  const root = document.documentElement;
  const save = () => {
    root.dataset.errors = JSON.stringify(errors);
    root.dataset.resources = JSON.stringify(performance.getEntriesByType("resource").map((r) => r.name));
  };
  window.addEventListener("error", (e) => { errors.push(String(e.message || e.type)); save(); }, true);
  window.addEventListener("unhandledrejection", (e) => { errors.push(String(e.reason)); save(); });
  document.addEventListener("securitypolicyviolation", (e) => { errors.push("blocked " + e.blockedURI); save(); });
  const original = console.error;
  console.error = function (...args) { errors.push(args.map(String).join(" ")); save(); original.apply(console, args); };
  window.addEventListener("load", () => { save(); root.dataset.loaded = "1"; });
  save();
})();
