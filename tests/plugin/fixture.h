/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Test helpers: load a device-state fixture (NAME.bin) and its QOM facts (NAME.json). */
#pragma once

#include "probe.h"

typedef struct {
    char *name;
    GBytes *state;
    GPtrArray *devices; /* SmDevice* */
    char *qemu;
    char *machine;
} Fixture;

/* Directory from SM_SOURCE_ROOT (set by the test environment). */
char *fixture_dir(void);
/* Names (without extension) of every fixture, sorted. */
GPtrArray *fixture_list(void);
Fixture *fixture_load(const char *name);
void fixture_free(Fixture *f);
/* Fresh copies of the fixture's devices (reports may fill in dev paths). */
GPtrArray *fixture_devices(const Fixture *f);
SmReport *fixture_report(const Fixture *f, GBytes *state);
const SmDeviceVerdict *report_device(const SmReport *r, const char *id);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Fixture, fixture_free);
