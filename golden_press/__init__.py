"""Pure domain code shared by workflows, activities and clients: no I/O lives here."""
