// /docs: Swagger UI (served by the gateway from the swagger-ui-py package) on this gateway's /openapi.json.
// A file of its own because the Content-Security-Policy allows no inline script.
"use strict";

window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  // The default validator badge loads an image from validator.swagger.io: nothing here leaves this origin.
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  // "Try it out" sends the page's session cookie (same origin), or the API key given under "Authorize".
  withCredentials: true,
  displayRequestDuration: true,
  filter: true,
});
