// Package web is the station's operator side over HTTP: the operator page (live parts with
// their images and heatmaps, yield, alerts), the part detail page, the HTTP API (verdicts,
// labels, triggers, model installs, status, server-sent events), /metrics, /healthz and
// /readyz.
//
// # Basics
//
// Start binds the address and returns the server's run function; the page's assets
// (index.html, part.html, style.css, app.js) are embedded. The server reaches the running
// station through Station and Deps only.
//
// # Caveats
//
// State changes (labels, triggers, installs) need the token or basic auth when one is
// configured and are refused from a page of another origin. Images and heatmaps of parts
// that were not kept are held in memory for the last few parts only (Recent).
package web
