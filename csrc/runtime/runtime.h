/* The deploy runtime's internal entry (the format's constants are in
 * deploy_format.h). */
#ifndef MERA_RUNTIME_RUNTIME_H
#define MERA_RUNTIME_RUNTIME_H

#include <stddef.h>

#include "runtime/deploy_format.h"
#include "runtime/mera_deploy.h"


/* Loads deploy_dir (deploy.json, deploy.params). expected_model_id: the
 * 16 hex digits deploy.so was built with, or NULL not to check. NULL on
 * failure with a message in err and the mera_deploy_status in *status
 * (status may be NULL; it gets MERA_DEPLOY_OK on success). deploy.so's generated entry file defines
 * mera_deploy_create() as a call of this with its embedded id. */
mera_deploy *mera_rt_create(const char *deploy_dir, const char *expected_model_id, int *status, char *err,
                            size_t err_len);
/* As mera_rt_create, and deploy.json must hold what build_json (the
 * deploy.json mera.build wrote, which deploy.so embeds) holds, field by
 * field; the first field that differs is named in the refusal. build_json
 * NULL: not checked. */
mera_deploy *mera_rt_create_for_build(const char *deploy_dir, const char *expected_model_id, const char *build_json,
                                      size_t build_json_len, int *status, char *err, size_t err_len);

#endif
