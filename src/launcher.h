/*-------------------------------------------------------------------------
 * launcher.h
 *		The launcher and the sync workers it starts (launcher.c).
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_LAUNCHER_H
#define STRIPE_LAUNCHER_H

extern void stripe_launcher_init(void);	/* _PG_init, preloaded only */
extern PGDLLEXPORT void stripe_launcher_main(Datum main_arg);
extern PGDLLEXPORT void stripe_worker_main(Datum main_arg);

#endif							/* STRIPE_LAUNCHER_H */
