// The staff's announcement banner (templates/_announcement.html): dismissing it asks the server to remember it for
// this user (on every device) and removes it without reloading the page; without JavaScript the form still works.
for (const form of document.querySelectorAll(".announcement-dismiss")) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const banner = form.closest(".announcement");
    try {
      const response = await fetch(form.action, {
        method: "POST",
        body: new FormData(form),
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      if (response.ok || response.status === 404) banner.remove(); // 404: expired or withdrawn meanwhile
    } catch {
      form.submit(); // offline or blocked: the plain form post, which reloads the page
    }
  });
}
