"""What the customer-facing pages are made of: the layout every page shares, and the success
page's words for each status and the blocks rendered from them. The routes are in
`web.routes.pages`."""
