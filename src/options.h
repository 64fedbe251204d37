/*-------------------------------------------------------------------------
 * options.h
 *		Options of the stripe_sync and intempt foreign data wrappers, and a
 *		Stripe server's connection settings (options.c).
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_OPTIONS_H
#define STRIPE_OPTIONS_H

#define STRIPE_DEFAULT_API_URL		"https://api.stripe.com"
#define STRIPE_DEFAULT_API_VERSION	"2026-10-28.endive"

typedef struct StripeConn
{
	char	   *api_url;		/* without trailing slash */
	char	   *api_version;
	char	   *account;		/* Stripe-Account header, or NULL */
	char	   *on_behalf;		/* Connect fan-out: the connected account a sync
								 * reads (Stripe-Account), under the platform's
								 * rate limit; else NULL */
	char	   *api_key;		/* secret: never printed */
	char	   *server_name;
} StripeConn;

extern StripeConn *stripe_conn_for_server(Oid serverid, Oid userid);
struct ForeignServer;
extern struct UserMapping *stripe_user_mapping(Oid userid, struct ForeignServer *server);
extern bool stripe_valid_url(const char *url);
extern bool stripe_valid_object_path(const char *path);
extern bool stripe_chars_in(const char *s, const char *extra);

#endif							/* STRIPE_OPTIONS_H */
