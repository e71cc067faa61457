// Starts Swagger UI on the API documentation page. A file of its own rather than an inline
// script, so the page runs under the app's Content-Security-Policy (script-src 'self').
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  if (!root || typeof window.SwaggerUIBundle !== "function") {
    return;
  }
  var csrfToken = root.getAttribute("data-csrf-token");
  window.SwaggerUIBundle({
    domNode: root,
    url: root.getAttribute("data-spec-url"),
    // The default validator badge is an image from validator.swagger.io: no third parties.
    validatorUrl: null,
    // Deep links wrap each path in a link inside the operation's toggle button: a control
    // inside a control, which screen readers cannot announce properly.
    deepLinking: false,
    requestInterceptor: function (request) {
      // "Try it out" from a signed-in session: changes need the session's CSRF token.
      if (csrfToken) {
        request.headers["X-CSRF-Token"] = csrfToken;
      }
      return request;
    },
  });
})();
