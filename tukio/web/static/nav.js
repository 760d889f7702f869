// Change the console's page without reloading it (app.js shows the page of the new path).

export function go(url) {
  history.pushState(null, "", url);
  window.dispatchEvent(new Event("tukio:navigate"));
}
