// Starts Swagger UI on /docs (saas/apidocs/routes.py): a file, not an inline script, so that the
// page's Content-Security-Policy can forbid inline scripts.
"use strict";

(() => {
  const root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.specUrl,
    domNode: root,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    deepLinking: true,
    displayRequestDuration: true,
    // Swagger UI's default shows a badge from validator.swagger.io, which receives the schema.
    validatorUrl: null,
  });
})();
