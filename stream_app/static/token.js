  // The API token: opened as /ops#token=..., kept for this tab in sessionStorage and
  // taken out of the address bar; asked for once if the server answers 401.
  const TOKEN_KEY = "cvm.ops.token";
  let asked = false;
  const fragment = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (fragment) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(fragment[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  function authHeaders() {
    const token = sessionStorage.getItem(TOKEN_KEY);
    return token ? {"Authorization": "Bearer " + token} : {};
  }
  function askToken() {
    sessionStorage.removeItem(TOKEN_KEY);
    if (asked) return;
    asked = true;
    const token = window.prompt("API token of this worker (read scope):");
    if (token && token.trim()) sessionStorage.setItem(TOKEN_KEY, token.trim());
  }
