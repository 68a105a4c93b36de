<?php

declare(strict_types=1);

/**
 * The kit's autoloader, for projects without Composer: PSR-4, the
 * namespace Opsgate\ mapped to src/.
 *
 *     require '/path/to/opsgate-php/autoload.php';
 *
 * A Composer project can instead map the same prefix in its own
 * composer.json ("autoload": {"psr-4": {"Opsgate\\": "vendor-local/opsgate-php/src/"}}).
 */
spl_autoload_register(static function (string $class): void {
    $prefix = 'Opsgate\\';
    if (strncmp($class, $prefix, strlen($prefix)) !== 0) {
        return;
    }
    $file = __DIR__ . '/src/' . str_replace('\\', '/', substr($class, strlen($prefix))) . '.php';
    if (is_file($file)) {
        require $file;
    }
});
