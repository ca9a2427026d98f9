"""Readers that turn vendor exports (Wind, iFinD) into the data contract's tables."""
from emdlot.importers.wind import (
    EdbSeries,
    ExtensionRule,
    IfindFirstDefaultsConfig,
    ImportFormatError,
    MacroImportConfig,
    WindDefaultsConfig,
    read_ifind_first_defaults,
    read_wind_defaults,
    read_wind_edb,
    read_wind_macro,
    series_summary,
    to_quarterly,
)

__all__ = [
    "EdbSeries",
    "ExtensionRule",
    "IfindFirstDefaultsConfig",
    "ImportFormatError",
    "MacroImportConfig",
    "WindDefaultsConfig",
    "read_ifind_first_defaults",
    "read_wind_defaults",
    "read_wind_edb",
    "read_wind_macro",
    "series_summary",
    "to_quarterly",
]
