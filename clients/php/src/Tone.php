<?php

declare(strict_types=1);

namespace Opsgate;

/**
 * The tone of the presenter's message, for the colour of a banner.
 */
enum Tone: string
{
    case Success = 'success';
    case Info = 'info';
    case Warning = 'warning';
    case Danger = 'danger';
}
