package dev.nodemeter.apicurio;

import io.apicurio.common.apps.config.DynamicConfigPropertyList;
import java.util.List;
import javax.enterprise.inject.Produces;
import javax.inject.Singleton;

/**
 * Stands in for the build-time half of Apicurio's config-index extension, which Maven
 * Central does not serve: that half lists the properties an admin may change while the
 * registry runs. Here the list is empty, so every property keeps its static value.
 */
public class NoDynamicConfig {
    @Produces
    @Singleton
    DynamicConfigPropertyList dynamicConfigProperties() {
        return new DynamicConfigPropertyList(List.of());
    }
}
