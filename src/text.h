/*-------------------------------------------------------------------------
 * text.h
 *		Text that crosses the network (text.c): URL encoding, path segments,
 *		and what a server sent made fit for a message or the log.
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_TEXT_H
#define STRIPE_TEXT_H

extern char *stripe_urlencode(const char *s);
extern char *stripe_path_segment(const char *s);
extern void stripe_scrub_secrets(char *msg);
extern char *stripe_safe_text(const char *s, size_t len, size_t max, const char *key);

#endif							/* STRIPE_TEXT_H */
