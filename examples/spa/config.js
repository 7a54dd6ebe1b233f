// Where the API is. `python -m app spa --api <url>` serves its own version of this file;
// this default is for opening the example with any other static server.
window.SPA_CONFIG = { apiUrl: "http://127.0.0.1:8000" };
