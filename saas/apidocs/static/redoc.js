// Starts ReDoc on /redoc (saas/apidocs/routes.py): a file, not an inline script, so that the
// page's Content-Security-Policy can forbid inline scripts.
"use strict";

(() => {
  const root = document.getElementById("redoc");
  Redoc.init(root.dataset.specUrl, {}, root);
})();
