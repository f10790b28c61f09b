"""Plain types and errors that every layer shares. Imports no infrastructure library."""
