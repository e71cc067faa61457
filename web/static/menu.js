// The staff menu on a narrow screen: folded behind its "Menu" button, opened and closed by it
// (Escape closes it too). Loaded right after the menu, so a phone never shows it unfolded
// first; without this script the menu simply stays open, wrapped over several lines.
(function () {
  "use strict";
  var header = document.querySelector("header.top");
  var button = header && header.querySelector(".menu-toggle");
  var menu = button && document.getElementById(button.getAttribute("aria-controls"));
  if (!menu) {
    return;
  }
  header.classList.add("has-menu");

  function setOpen(open) {
    header.classList.toggle("menu-open", open);
    button.setAttribute("aria-expanded", open ? "true" : "false");
  }

  button.addEventListener("click", function () {
    setOpen(button.getAttribute("aria-expanded") !== "true");
  });
  header.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && button.getAttribute("aria-expanded") === "true") {
      setOpen(false);
      button.focus();
    }
  });
})();

// A table or panel that scrolls sideways (on a phone) must be reachable from the keyboard, or
// its hidden columns cannot be scrolled into view without a pointer: such a region takes focus.
(function () {
  "use strict";
  function markScrollableRegions() {
    var main = document.querySelector("main");
    if (!main) {
      return;
    }
    main.querySelectorAll("*").forEach(function (element) {
      var overflow = window.getComputedStyle(element).overflowX;
      var scrolls = (overflow === "auto" || overflow === "scroll") &&
        element.scrollWidth > element.clientWidth;
      if (scrolls && !element.hasAttribute("tabindex")) {
        element.setAttribute("tabindex", "0");
        element.setAttribute("data-scroll-region", "");
      } else if (!scrolls && element.hasAttribute("data-scroll-region")) {
        element.removeAttribute("tabindex");
        element.removeAttribute("data-scroll-region");
      }
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", markScrollableRegions);
  } else {
    markScrollableRegions();
  }
  window.addEventListener("resize", markScrollableRegions);
})();
