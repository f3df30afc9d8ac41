// Applies the remembered colour theme before the page paints (loaded without defer in <head>).
(function () {
  try {
    var theme = localStorage.getItem("durable-theme");
    if (theme === "dark" || theme === "light") document.documentElement.dataset.theme = theme;
  } catch (e) { /* storage disabled: follow prefers-color-scheme */ }
})();
