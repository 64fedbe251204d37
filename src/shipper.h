/*-------------------------------------------------------------------------
 * shipper.h
 *		The outbox shipper's entry point (shipper.c).
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_SHIPPER_H
#define STRIPE_SHIPPER_H

extern PGDLLEXPORT void stripe_shipper_main(Datum main_arg);

#endif							/* STRIPE_SHIPPER_H */
