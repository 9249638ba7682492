/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KMK_CORE_H
#define KMK_CORE_H

int kmk_core_register(const char *name);
void kmk_core_unregister(const char *name);

#endif
