"""Projects: a user's folders of chats, with instructions and files sent with each of their chats (docs/projects.md)."""
