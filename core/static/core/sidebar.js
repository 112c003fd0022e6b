// The admin's navigation sidebar starts closed, so that every list fits a 1400-pixel
// screen beside its filters (its width would push the widest ones into a scroll bar).
// Its toggle still opens it, and Django's nav_sidebar.js, which runs after this
// (deferred), remembers that choice in the same key.
if (localStorage.getItem("django.admin.navSidebarIsOpen") === null) {
  localStorage.setItem("django.admin.navSidebarIsOpen", "false");
}
