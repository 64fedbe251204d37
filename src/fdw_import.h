/*-------------------------------------------------------------------------
 * fdw_import.h
 *		IMPORT FOREIGN SCHEMA of the FDW (fdw_import.c).
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_FDW_IMPORT_H
#define STRIPE_FDW_IMPORT_H

#include "nodes/parsenodes.h"

extern List *stripe_import_foreign_schema(ImportForeignSchemaStmt *stmt, Oid serverOid);

#endif							/* STRIPE_FDW_IMPORT_H */
